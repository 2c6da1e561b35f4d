"""Completion logprobs through the output layer at completion positions only equal the full-logits ones."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from agentlightning_rl import (
    AgentAdapters,
    LoraSettings,
    Sample,
    completion_logprobs,
    make_micro_batches,
    naive_completion_logprobs,
)
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
