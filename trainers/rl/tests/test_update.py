"""One optimizer step: gradient accumulation equals one big batch, the step moves the policy the right way,
and the KL reference is the frozen model."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from agentlightning_rl import (
    AgentAdapters,
    LightningRLConfig,
    LoraSettings,
    Sample,
    completion_logprobs,
    make_micro_batches,
    make_optimizer,
    train_step,
)
from conftest import VOCAB
from factories import call


def samples_for(model: Any, advantages: list[float], *, drift: float = 0.3) -> list[Sample]:
    """Calls of random tokens whose behaviour logprobs are the model's own, shifted by up to ±drift (so that some
    importance ratios leave the clip range), each in its own rollout."""
    generator = torch.Generator().manual_seed(2)
    result = []
    for i, advantage in enumerate(advantages):
        prompt_length, completion_length = 2 + i % 3, 1 + (i * 2) % 5
        ids = torch.randint(3, VOCAB, (prompt_length + completion_length,), generator=generator).tolist()
        prompt, completion = ids[:prompt_length], ids[prompt_length:]
        probe = call(i, prompt=prompt, completion=completion)
        (batch,) = make_micro_batches(
            [Sample(probe, 0.0, 0.0, "x", "g")], "token", micro_batch_size=1, micro_batch_tokens=None
        )
        with torch.no_grad():
            own = completion_logprobs(model, batch.input_ids, batch.attention_mask, batch.completion_mask)
        shift = (torch.rand(len(completion), generator=generator) * 2 - 1) * drift
        transition = call(i, prompt=prompt, completion=completion, logprobs=(own + shift).tolist())
        result.append(Sample(transition, advantage, advantage, f"r{i // 2}", "g"))
    return result


@pytest.mark.parametrize("aggregation", ["token", "sequence", "rollout"])
def test_accumulating_micro_batches_equals_one_big_batch(tiny_model: Any, aggregation: Any) -> None:
    # Float32: these identities hold to rounding; bfloat16 rounds each split differently.
    config = LightningRLConfig(loss_aggregation=aggregation, max_grad_norm=1.0, precision="fp32")
    samples = samples_for(tiny_model, [1.0, -1.0, 0.5, -0.5, 2.0, -2.0])
    results = []
    for size, tokens in ((1, None), (100, None), (2, 8)):
        model = copy.deepcopy(tiny_model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        batches = make_micro_batches(samples, aggregation, micro_batch_size=size, micro_batch_tokens=tokens)
        metrics = train_step(model, optimizer, batches, config)
        results.append((len(batches), metrics, dict(model.named_parameters())))
    (split, split_metrics, split_params), (one, one_metrics, one_params), (mixed, _, mixed_params) = results
    assert split == 6 and one == 1 and 1 < mixed < 6
    # Logprobs of one call padded two ways differ by float32 rounding (up to ~4e-6 here); the loss sums ± terms.
    assert split_metrics.loss == pytest.approx(one_metrics.loss, abs=1e-5)
    assert split_metrics.grad_norm == pytest.approx(one_metrics.grad_norm, rel=1e-5)
    assert split_metrics.clip_fraction == pytest.approx(one_metrics.clip_fraction) and 0 < one_metrics.clip_fraction < 1
    assert split_metrics.tokens == one_metrics.tokens and split_metrics.sequences == 6
    for name, param in one_params.items():
        torch.testing.assert_close(split_params[name], param, rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(mixed_params[name], param, rtol=1e-5, atol=1e-6, msg=name)


def test_a_step_makes_a_positive_advantage_call_likelier_and_a_negative_one_less_likely(tiny_model: Any) -> None:
    good, bad = samples_for(tiny_model, [1.0, -1.0], drift=0.0)
    config = LightningRLConfig(learning_rate=1e-3, max_grad_norm=None, precision="fp32")
    optimizer = make_optimizer(tiny_model, config)
    batches = make_micro_batches([good, bad], "sequence", micro_batch_size=8, micro_batch_tokens=None)

    def logprob_sums() -> list[float]:
        with torch.no_grad():
            (batch,) = batches
            new = completion_logprobs(tiny_model, batch.input_ids, batch.attention_mask, batch.completion_mask)
        rows = batch.completion_mask.sum(dim=1).tolist()
        return [float(part.sum()) for part in new.split(rows)]

    before = logprob_sums()
    metrics = train_step(tiny_model, optimizer, batches, config)
    after = logprob_sums()
    assert metrics.ratio_mean == pytest.approx(1.0, abs=1e-5) and metrics.clip_fraction == 0.0
    # Rows are packed longest first; find which row is the good call by its advantage.
    (batch,) = batches
    good_row = 0 if float(batch.advantages[0]) > 0 else 1
    assert after[good_row] > before[good_row]
    assert after[1 - good_row] < before[1 - good_row]


def test_with_lora_the_reference_is_the_base_model_and_only_adapters_train(tiny_model: Any) -> None:
    adapters = AgentAdapters(tiny_model, LoraSettings(rank=2, alpha=4))
    config = LightningRLConfig(kl_coef=0.1, learning_rate=1e-2, lora=LoraSettings(rank=2, alpha=4))
    optimizer = make_optimizer(adapters.model, config)
    assert all("lora_" in n for n, p in adapters.model.named_parameters() if p.requires_grad)
    base_before = {n: p.detach().clone() for n, p in adapters.model.named_parameters() if "lora_" not in n}
    batches = make_micro_batches(
        samples_for(tiny_model, [1.0, -1.0]), "token", micro_batch_size=8, micro_batch_tokens=None
    )
    first = train_step(adapters.model, optimizer, batches, config, adapters=adapters)
    assert first.reference_kl == pytest.approx(0.0, abs=1e-8)  # LoRA starts as the identity (B = 0)
    second = train_step(adapters.model, optimizer, batches, config, adapters=adapters)
    assert second.reference_kl is not None and second.reference_kl > 0  # the adapter moved away from the base
    for name, param in adapters.model.named_parameters():
        if "lora_" not in name:
            assert torch.equal(param, base_before[name]), name


def test_full_fine_tuning_with_kl_needs_a_frozen_reference_model(tiny_model: Any) -> None:
    config = LightningRLConfig(kl_coef=0.1)
    reference = copy.deepcopy(tiny_model).requires_grad_(False)
    batches = make_micro_batches(samples_for(tiny_model, [1.0]), "token", micro_batch_size=8, micro_batch_tokens=None)
    with pytest.raises(ValueError, match="reference_model="):
        train_step(tiny_model, make_optimizer(tiny_model, config), batches, config)
    metrics = train_step(tiny_model, make_optimizer(tiny_model, config), batches, config, reference_model=reference)
    assert metrics.reference_kl == pytest.approx(0.0, abs=1e-8)


def test_a_step_with_shared_prompts_equals_one_with_separate_passes(tiny_model: Any) -> None:
    # Two groups of three samples each with one prompt per group, as group_size rollouts of a task's first call.
    config = LightningRLConfig(max_grad_norm=1.0, precision="fp32")
    drafts = samples_for(tiny_model, [1.0, -1.0, 0.5, -0.5, 2.0, -2.0])
    samples = []
    for i, sample in enumerate(drafts):
        first = drafts[(i // 3) * 3].transition  # the group's prompt
        transition = sample.transition.model_copy(update={"prompt_token_ids": first.prompt_token_ids})
        samples.append(Sample(transition, sample.advantage, sample.return_, sample.rollout_id, sample.group_id))
    results = []
    for share in (False, True):
        model = copy.deepcopy(tiny_model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        batches = make_micro_batches(samples, "token", micro_batch_size=8, micro_batch_tokens=None, share_prompts=share)
        assert (batches[0].shared_prompts is not None) == share
        results.append((train_step(model, optimizer, batches, config), dict(model.named_parameters())))
    (separate, separate_params), (shared, shared_params) = results
    assert shared.loss == pytest.approx(separate.loss, rel=1e-5)
    assert shared.grad_norm == pytest.approx(separate.grad_norm, rel=1e-4)
    assert shared.tokens == separate.tokens
    for name, p in shared_params.items():
        torch.testing.assert_close(p, separate_params[name], rtol=1e-4, atol=1e-5, msg=name)
