"""bf16 mixed precision: the passes run in bfloat16 under autocast, the weights and the optimizer stay float32,
the logprobs stay close to float32's, and a step still learns."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from agentlightning_rl import (
    LightningRLConfig,
    Sample,
    completion_logprobs,
    make_micro_batches,
    make_optimizer,
    train_step,
)
from agentlightning_rl.precision import autocast, autocast_dtype, native_bf16
from factories import call
from test_update import samples_for

CPU = torch.device("cpu")


def test_precision_names_an_autocast_dtype_and_auto_follows_the_hardware() -> None:
    assert autocast_dtype("fp32", CPU) is None
    assert autocast_dtype("bf16", CPU) is torch.bfloat16
    assert autocast_dtype("auto", CPU) is (torch.bfloat16 if native_bf16(CPU) else None)


def _behaving_as(model: Any, samples: list[Sample], dtype: torch.dtype | None) -> list[Sample]:
    """The samples with behaviour logprobs computed by ``model`` under autocast in ``dtype``, as an engine
    generating in that arithmetic reports them."""
    result = []
    for sample in samples:
        transition = sample.transition
        (batch,) = make_micro_batches([sample], "token", micro_batch_size=1, micro_batch_tokens=None)
        with torch.no_grad(), autocast(dtype, CPU):
            own = completion_logprobs(model, batch.input_ids, batch.attention_mask, batch.completion_mask)
        assert own.dtype == torch.float32  # taken in float32 from the logits
        updated = call(
            0,
            prompt=list(transition.prompt_token_ids or []),
            completion=list(transition.completion_token_ids or []),
            logprobs=own.tolist(),
        )
        result.append(Sample(updated, sample.advantage, sample.return_, sample.rollout_id, sample.group_id))
    return result


def test_bf16_logprobs_are_float32_and_close_to_the_float32_ones(tiny_model: Any) -> None:
    samples = samples_for(tiny_model, [1.0, -1.0, 0.5, -0.5], drift=0.0)
    batches = make_micro_batches(samples, "token", micro_batch_size=8, micro_batch_tokens=None)
    (batch,) = batches
    with torch.no_grad():
        exact = completion_logprobs(tiny_model, batch.input_ids, batch.attention_mask, batch.completion_mask)
        with autocast(torch.bfloat16, CPU):
            mixed = completion_logprobs(tiny_model, batch.input_ids, batch.attention_mask, batch.completion_mask)
    assert mixed.dtype == torch.float32
    # bfloat16 keeps 8 bits of mantissa (0.4 % per rounding); after a few layers the logprobs are off by a few %.
    torch.testing.assert_close(mixed, exact, rtol=0.05, atol=0.05)
    assert not torch.equal(mixed, exact)  # the passes did run in bfloat16


def test_a_bf16_step_keeps_float32_weights_and_learns(tiny_model: Any) -> None:
    config = LightningRLConfig(learning_rate=1e-3, max_grad_norm=None, precision="bf16")
    model = copy.deepcopy(tiny_model)
    samples = _behaving_as(model, samples_for(model, [1.0, -1.0, 0.5, -0.5], drift=0.0), torch.bfloat16)
    batches = make_micro_batches(samples, "token", micro_batch_size=2, micro_batch_tokens=None)
    optimizer = make_optimizer(model, config)

    first = train_step(model, optimizer, batches, config)
    # The behaviour logprobs come from the same arithmetic (other batch shapes round a little differently): the
    # importance ratios start at 1, none is clipped.
    assert first.ratio_mean == pytest.approx(1.0, abs=0.01) and first.clip_fraction == 0.0
    assert all(
        p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters()
    )
    assert all(
        s.dtype == torch.float32
        for state in optimizer.state.values()
        for s in state.values()
        if isinstance(s, torch.Tensor) and s.numel() > 1
    )
    second = train_step(model, optimizer, batches, config)
    # The loss is measured before each update: the first step lowered it.
    assert second.loss < first.loss
    assert second.ratio_mean != pytest.approx(1.0, abs=1e-6)


def test_behaviour_logprobs_in_float32_would_put_a_bf16_step_off_policy(tiny_model: Any) -> None:
    # Why the engine generates under the step's autocast: the same weights in the other arithmetic give ratios
    # away from 1 before any update, some outside the clip range.
    config = LightningRLConfig(precision="bf16")
    first_steps = {}
    for dtype in (torch.bfloat16, None):
        model = copy.deepcopy(tiny_model)
        samples = _behaving_as(model, samples_for(model, [1.0, -1.0, 0.5, -0.5], drift=0.0), dtype)
        batches = make_micro_batches(samples, "token", micro_batch_size=8, micro_batch_tokens=None)
        first_steps[dtype] = train_step(model, make_optimizer(model, config), batches, config)
    matched, mismatched = first_steps[torch.bfloat16], first_steps[None]
    assert abs(matched.ratio_mean - 1) < abs(mismatched.ratio_mean - 1) / 3
    assert matched.clip_fraction == 0.0 < mismatched.clip_fraction
