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
    takes_block_masks,
    tree_logprobs,
)
from agentlightning_rl.prefix_tree import pack_prefix_trees
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
    # Twice, as gradient accumulation does: the tied embedding's rows are added into the output layer's gradient.
    for _ in range(2):
        completion_logprobs(tiny_model, *args).sum().backward()
    assert tiny_model.get_input_embeddings().weight.grad.layout == torch.strided  # as an optimizer takes it
    fast = {name: p.grad.clone() for name, p in tiny_model.named_parameters()}
    tiny_model.zero_grad()
    for _ in range(2):
        naive_completion_logprobs(tiny_model, *args).sum().backward()
    for name, p in tiny_model.named_parameters():
        torch.testing.assert_close(fast[name], p.grad, rtol=1e-4, atol=1e-4, msg=name)


def test_a_token_with_the_padding_id_gets_the_embedding_gradient_nn_embedding_gives(tiny_model: Any) -> None:
    embedding = tiny_model.get_input_embeddings()
    assert embedding.padding_idx == 0
    batch = batch_of((4, 3), (3, 2))
    batch.input_ids[0, 1] = batch.input_ids[1, 4] = 0  # a prompt token and a completion token say the pad id
    args = (batch.input_ids, batch.attention_mask, batch.completion_mask)
    completion_logprobs(tiny_model, *args).sum().backward()
    fast = embedding.weight.grad.clone()
    tiny_model.zero_grad()
    naive_completion_logprobs(tiny_model, *args).sum().backward()
    torch.testing.assert_close(fast, embedding.weight.grad, rtol=1e-4, atol=1e-4)


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


def values_and_gradients(model: Any, compute: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    values = compute()
    values.sum().backward()
    return values.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def assert_same(
    got: tuple[torch.Tensor, dict[str, torch.Tensor]], want: tuple[torch.Tensor, dict[str, torch.Tensor]]
) -> None:
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-5)
    for name, grad in want[1].items():
        # Summation order differs between layouts: float32 noise grows with the gradient (up to ~20 here).
        torch.testing.assert_close(got[1][name], grad, rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.parametrize("layout", ["trees sdpa", "trees eager", "cache"])
def test_shared_prompt_logprobs_and_gradients_equal_separate_passes(tiny_model: Any, layout: str) -> None:
    if layout == "trees eager":
        tiny_model.set_attn_implementation("eager")
        assert tiny_model.config._attn_implementation == "eager"
    trees = layout != "cache"  # "cache": what a model whose attention takes no 4D mask (flash attention) gets
    assert takes_block_masks(tiny_model)
    samples = group_samples((7, [3, 1, 4]), (2, [2, 5]))
    (separate,) = make_micro_batches(samples, "token", micro_batch_size=8, micro_batch_tokens=None)
    (shared,) = make_micro_batches(
        samples, "token", micro_batch_size=8, micro_batch_tokens=None, share_prompts=True, prefix_trees=trees
    )
    assert not separate.prefix_trees and separate.shared_prompts is None
    if trees:
        assert shared.prefix_trees and shared.shared_prompts is None
    else:
        # Two distinct prompts run once each; five completion rows on top.
        assert shared.shared_prompts is not None and not shared.prefix_trees
        assert shared.shared_prompts.input_ids.shape[0] == 2 and shared.input_ids.shape[0] == 5

    # The layouts order their rows differently (by prompt, or longest first): compare the tokens as a whole.
    def ordered(values: torch.Tensor) -> torch.Tensor:
        return values.sort().values

    torch.testing.assert_close(ordered(shared.behaviour_logprobs), ordered(separate.behaviour_logprobs))
    # The reference: every sequence its own padded row, transformers' own causal mask.
    plain = (separate.input_ids, separate.attention_mask, separate.completion_mask)
    want_values, want_grads = values_and_gradients(tiny_model, lambda: completion_logprobs(tiny_model, *plain))
    values, grads = values_and_gradients(tiny_model, lambda: batch_logprobs(tiny_model, shared))
    torch.testing.assert_close(ordered(values), ordered(want_values), rtol=0, atol=1e-5)
    assert_same((want_values, grads), (want_values, want_grads))


@pytest.mark.parametrize("max_row_tokens", [4096, 12])
def test_prefix_trees_give_each_call_its_own_context_and_gradient(tiny_model: Any, max_row_tokens: int) -> None:
    system = [5, 6, 7, 8]
    first = [*system, 20, 21, 22, 30, 31]  # prompt, then the first call's completion (30, 31)
    sequences = [
        first,
        [*first, 40, 41, 50, 51, 52],  # the agent's next call: the first call, a tool's answer (40, 41), a completion
        [*system, 23, 24, 32],  # another task with the same system message
        [*system, 23, 24, 32],  # a sample that came out the same
        [*system, 23, 24, 33, 34],
    ]
    starts = [7, 11, 6, 6, 6]
    trees = pack_prefix_trees(sequences, starts, max_row_tokens=max_row_tokens)
    distinct = {tuple(s[: j + 1]) for s in sequences for j in range(len(s))}
    assert trees.nodes == len(distinct) if max_row_tokens == 4096 else trees.nodes > len(distinct)
    assert trees.input_ids.shape[1] <= max(max_row_tokens, max(map(len, sequences)))
    width = max(map(len, sequences))
    ids = torch.zeros((len(sequences), width), dtype=torch.long)
    attention = torch.zeros_like(ids)
    completion = torch.zeros((len(sequences), width), dtype=torch.bool)
    for i, (tokens, start) in enumerate(zip(sequences, starts, strict=True)):
        ids[i, : len(tokens)] = torch.tensor(tokens)
        attention[i, : len(tokens)] = 1
        completion[i, start : len(tokens)] = True
    want = values_and_gradients(tiny_model, lambda: completion_logprobs(tiny_model, ids, attention, completion))
    got = values_and_gradients(
        tiny_model, lambda: tree_logprobs(tiny_model, sequences, starts, max_row_tokens=max_row_tokens)
    )
    assert_same(got, want)


def test_prefix_trees_refuse_a_completion_at_position_zero() -> None:
    with pytest.raises(ValueError, match="nothing predicts it"):
        pack_prefix_trees([[5, 6]], [0])


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
