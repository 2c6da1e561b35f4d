"""Completion logprobs through the output layer at completion positions only equal the full-logits ones."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from agentlightning_rl import (
    AgentAdapters,
    LoraSettings,
    Sample,
    batch_logprobs,
    completion_logprobs,
    make_micro_batches,
    naive_completion_logprobs,
)
from agentlightning_rl import logprobs as logprobs_module
from conftest import VOCAB
from factories import call


def batch_of(*lengths: tuple[int, int]) -> Any:
    """One micro-batch of sequences with (prompt, completion) lengths, random tokens."""
    generator = torch.Generator().manual_seed(1)
    samples = []
    for i, (prompt, completion) in enumerate(lengths):
        ids = torch.randint(3, VOCAB, (prompt + completion,), generator=generator).tolist()
        samples.append(Sample(call(i, prompt=ids[:prompt], completion=ids[prompt:]), 1.0, 1.0, f"r{i}", "g"))
    (batch,) = make_micro_batches(samples, "token", micro_batch_size=8, micro_batch_tokens=None)
    return batch


def test_completion_logprobs_equal_the_naive_full_logits_computation(tiny_model: Any) -> None:
    batch = batch_of((6, 3), (2, 5), (9, 1))
    args = (batch.input_ids, batch.attention_mask, batch.completion_mask)
    fast = completion_logprobs(tiny_model, *args)
    assert fast.shape == (9,)
    torch.testing.assert_close(fast, naive_completion_logprobs(tiny_model, *args), rtol=0, atol=1e-5)
    assert bool((fast < 0).all())


def test_padding_does_not_change_a_sequence_s_logprobs(tiny_model: Any) -> None:
    together = batch_of((6, 3), (2, 5))
    alone = batch_of((6, 3))
    with torch.no_grad():
        both = completion_logprobs(tiny_model, together.input_ids, together.attention_mask, together.completion_mask)
        one = completion_logprobs(tiny_model, alone.input_ids, alone.attention_mask, alone.completion_mask)
    torch.testing.assert_close(both[:3], one, rtol=0, atol=1e-5)


def test_gradients_equal_those_of_the_naive_computation(tiny_model: Any) -> None:
    batch = batch_of((4, 3), (3, 2))
    args = (batch.input_ids, batch.attention_mask, batch.completion_mask)
    completion_logprobs(tiny_model, *args).sum().backward()
    # The tied embedding's rows come in sparse and land in the output layer's dense gradient: an optimizer
    # takes it as it is.
    assert tiny_model.get_input_embeddings().weight.grad.layout == torch.strided
    fast = {name: p.grad.clone() for name, p in tiny_model.named_parameters()}
    tiny_model.zero_grad()
    naive_completion_logprobs(tiny_model, *args).sum().backward()
    for name, p in tiny_model.named_parameters():
        torch.testing.assert_close(fast[name], p.grad, rtol=1e-4, atol=1e-4, msg=name)


def test_a_peft_model_s_logprobs_use_its_active_adapter(tiny_model: Any) -> None:
    batch = batch_of((5, 4))
    args = (batch.input_ids, batch.attention_mask, batch.completion_mask)
    with torch.no_grad():
        base = completion_logprobs(tiny_model, *args)
        adapters = AgentAdapters(tiny_model, LoraSettings(rank=2, alpha=2))
        for name, p in adapters.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # LoRA starts as the identity (B = 0); move it
        adapted = completion_logprobs(adapters.model, *args)
        torch.testing.assert_close(adapted, naive_completion_logprobs(adapters.model, *args), rtol=0, atol=1e-5)
    assert not torch.allclose(adapted, base, atol=1e-3)


def test_a_completion_token_at_position_zero_is_refused(tiny_model: Any) -> None:
    ids = torch.tensor([[5, 6]])
    with pytest.raises(ValueError, match="position 0"):
        completion_logprobs(tiny_model, ids, torch.ones_like(ids), torch.tensor([[True, True]]))


def group_samples(*groups: tuple[int, list[int]]) -> list[Sample]:
    """Samples of groups that share a prompt: (prompt length, completion lengths of its samples)."""
    generator = torch.Generator().manual_seed(2)
    samples = []
    for g, (prompt_length, completions) in enumerate(groups):
        prompt = torch.randint(3, VOCAB, (prompt_length,), generator=generator).tolist()
        for i, length in enumerate(completions):
            completion = torch.randint(3, VOCAB, (length,), generator=generator).tolist()
            samples.append(Sample(call(i, prompt=prompt, completion=completion), 0.5 - i, 0.0, f"r{g}-{i}", f"g{g}"))
    return samples


@pytest.mark.parametrize("layout", ["packed sdpa", "packed eager", "cache"])
def test_shared_prompt_logprobs_and_gradients_equal_separate_passes(
    tiny_model: Any, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if layout == "packed eager":
        tiny_model.set_attn_implementation("eager")
        assert tiny_model.config._attn_implementation == "eager"
    if layout == "cache":  # what a model whose attention takes no block mask (flash attention) gets
        monkeypatch.setattr(logprobs_module, "_takes_block_masks", lambda causal_lm: False)
    assert logprobs_module._takes_block_masks(tiny_model) == (layout != "cache")
    samples = group_samples((7, [3, 1, 4]), (2, [2, 5]))
    (separate,) = make_micro_batches(samples, "token", micro_batch_size=8, micro_batch_tokens=None)
    (shared,) = make_micro_batches(samples, "token", micro_batch_size=8, micro_batch_tokens=None, share_prompts=True)
    assert shared.shared_prompts is not None and separate.shared_prompts is None
    # Two distinct prompts run once each; five completion rows on top.
    assert shared.shared_prompts.input_ids.shape[0] == 2 and shared.input_ids.shape[0] == 5

    # The layouts order their rows differently (by prompt, or longest first): compare the tokens as a whole.
    def ordered(values: torch.Tensor) -> torch.Tensor:
        return values.sort().values

    torch.testing.assert_close(ordered(shared.behaviour_logprobs), ordered(separate.behaviour_logprobs))

    batch_logprobs(tiny_model, shared).sum().backward()
    grads = {name: p.grad.clone() for name, p in tiny_model.named_parameters()}
    tiny_model.zero_grad()
    reference = batch_logprobs(tiny_model, separate)
    reference.sum().backward()
    with torch.no_grad():
        torch.testing.assert_close(ordered(batch_logprobs(tiny_model, shared)), ordered(reference), rtol=0, atol=1e-5)
    for name, p in tiny_model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-4, msg=name)


def test_prompts_are_shared_only_where_they_repeat_and_the_bounds_hold() -> None:
    samples = group_samples((5, [2, 2, 2, 2]), (3, [1, 1, 1, 1]), (4, [3]))
    batches = make_micro_batches(samples, "token", micro_batch_size=3, micro_batch_tokens=None, share_prompts=True)
    assert all(b.num_sequences <= 3 for b in batches)
    assert sum(b.num_sequences for b in batches) == 9
    assert sum(b.num_tokens for b in batches) == 4 * 2 + 4 * 1 + 3
    # A pack holding only one call of each prompt gains nothing from sharing: it keeps the plain layout.
    for batch in batches:
        shared = batch.shared_prompts
        if shared is not None:
            assert len(set(shared.row_prompt.tolist())) < batch.num_sequences
    one_each = group_samples((5, [2]), (3, [1]))
    (plain,) = make_micro_batches(one_each, "token", micro_batch_size=8, micro_batch_tokens=None, share_prompts=True)
    assert plain.shared_prompts is None
