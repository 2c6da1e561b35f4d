"""The clipped policy-gradient loss and its KL term against a direct hand computation."""

from __future__ import annotations

import math

import pytest
import torch
from agentlightning_rl import policy_loss

# Four tokens. New / behaviour probabilities give ratios 1, 2, 1.8 and 0.2.
NEW = [0.5, 0.5, 0.9, 0.1]
OLD = [0.5, 0.25, 0.5, 0.5]
ADVANTAGES = [1.0, 1.0, -1.0, -1.0]
WEIGHTS = [0.25, 0.25, 0.25, 0.25]


def run(
    clip_high: float = 0.2, kl_coef: float = 0.0, reference: list[float] | None = None
) -> tuple[torch.Tensor, torch.Tensor, object]:
    new = torch.tensor([math.log(p) for p in NEW], requires_grad=True)
    loss, metrics = policy_loss(
        new,
        torch.tensor([math.log(p) for p in OLD]),
        torch.tensor(ADVANTAGES),
        torch.tensor(WEIGHTS),
        clip_low=0.2,
        clip_high=clip_high,
        kl_coef=kl_coef,
        reference_logprobs=torch.tensor([math.log(p) for p in reference]) if reference else None,
    )
    loss.backward()
    assert new.grad is not None
    return loss, new.grad, metrics


def test_the_clipped_surrogate_matches_a_hand_computation() -> None:
    loss, grad, metrics = run()
    # token 0: r=1,   A=+1: -min(1, 1)          = -1    (gradient -A*r*w = -0.25)
    # token 1: r=2,   A=+1: -min(2, 1.2)        = -1.2  clipped: no gradient
    # token 2: r=1.8, A=-1: -min(-1.8, -1.2)    = +1.8  not clipped (a bad token got likelier): +1.8·0.25
    # token 3: r=0.2, A=-1: -min(-0.2, -0.8)    = +0.8  clipped: no gradient
    assert float(loss.detach()) == pytest.approx(0.25 * (-1 - 1.2 + 1.8 + 0.8))
    assert grad.tolist() == pytest.approx([-0.25, 0.0, 0.45, 0.0])
    assert metrics.tokens == 4
    assert metrics.clip_fraction == pytest.approx(0.5)
    assert metrics.ratio_mean == pytest.approx((1 + 2 + 1.8 + 0.2) / 4)
    ratios = [n / o for n, o in zip(NEW, OLD, strict=True)]
    assert metrics.approx_kl == pytest.approx(sum((r - 1) - math.log(r) for r in ratios) / 4)
    assert metrics.reference_kl is None


def test_the_upper_clip_range_is_its_own_setting() -> None:
    loss, _, _ = run(clip_high=0.28)  # token 1 is now clipped at 1.28
    assert float(loss.detach()) == pytest.approx(0.25 * (-1 - 1.28 + 1.8 + 0.8))


def test_the_k3_kl_to_the_reference_matches_a_hand_computation() -> None:
    reference = [0.5, 0.5, 0.5, 0.5]
    loss, grad, metrics = run(kl_coef=0.1, reference=reference)
    deltas = [math.log(r / n) for r, n in zip(reference, NEW, strict=True)]  # δ = log π_ref - log π_θ
    k3 = [math.exp(d) - d - 1 for d in deltas]
    assert float(loss.detach()) == pytest.approx(0.25 * (-1 - 1.2 + 1.8 + 0.8) + 0.25 * 0.1 * sum(k3))
    assert metrics.reference_kl == pytest.approx(sum(k3) / 4)
    # d k3 / d log π_θ = 1 - exp(δ)
    pg = [-0.25, 0.0, 0.45, 0.0]
    assert grad.tolist() == pytest.approx([g + 0.25 * 0.1 * (1 - math.exp(d)) for g, d in zip(pg, deltas, strict=True)])


def test_a_kl_coefficient_without_reference_logprobs_is_refused() -> None:
    with pytest.raises(ValueError, match="reference_logprobs"):
        run(kl_coef=0.1)
