# The formulas are written in their papers' notation (Greek letters, ×, ℓ).
"""The token-level clipped policy-gradient loss, with an optional KL penalty to a frozen reference.

For every completion token ``k`` (token ``y_k`` after context ``s_k``) with advantage ``A_k`` (its call's)::

    ρ_k   = exp(log π_θ(y_k|s_k) - log π_old(y_k|s_k))                 importance ratio; π_old is the engine
                                                                        that sampled y_k (its logprobs)
    ℓ^PG_k = -min(ρ_k · A_k, clip(ρ_k, 1 - ε_low, 1 + ε_high) · A_k)  PPO's clipped surrogate (Schulman et al.
                                                                        2017); asymmetric ε as DAPO's
                                                                        "clip-higher" (Yu et al. 2025)
    ℓ^KL_k = exp(δ_k) - δ_k - 1,   δ_k = log π_ref(y_k|s_k) - log π_θ(y_k|s_k)
                                                                        the "k3" estimator (Schulman 2020,
                                                                        "Approximating KL divergence") of
                                                                        KL(π_θ ‖ π_ref), as GRPO uses it
    L = Σ_k w_k · (ℓ^PG_k + β · ℓ^KL_k)

with the aggregation weights ``w_k`` of :mod:`agentlightning_rl.batch` (per token, per sequence or per
rollout), which sum to 1 over a whole optimizer step. ``k3`` is unbiased and always ≥ 0 for samples of
π_θ; ours come from π_old, close to π_θ within a step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["LossMetrics", "policy_loss"]


@dataclass(frozen=True)
class LossMetrics:
    """Token means over the loss's tokens (unweighted: they describe the tokens, not the objective)."""

    tokens: int
    #: Fraction of tokens whose clipped term was the smaller, i.e. that received no gradient from ℓ^PG.
    clip_fraction: float
    #: Mean ρ.
    ratio_mean: float
    #: k3 estimate of KL(π_old ‖ π_θ): mean of (ρ - 1) - log ρ. How far the step has moved from the engine.
    approx_kl: float
    #: Mean ℓ^KL (KL to the reference), or ``None`` without a reference.
    reference_kl: float | None


def policy_loss(
    new_logprobs: torch.Tensor,
    behaviour_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    *,
    clip_low: float,
    clip_high: float,
    kl_coef: float = 0.0,
    reference_logprobs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, LossMetrics]:
    """``L`` of the module docstring over ``N`` tokens (all arguments ``[N]``), and its metrics.

    ``reference_logprobs`` is needed when ``kl_coef > 0``; gradients flow through ``new_logprobs`` only.
    """
    if kl_coef > 0 and reference_logprobs is None:
        raise ValueError("kl_coef > 0 needs reference_logprobs (the frozen reference model's logprobs).")
    behaviour_logprobs = behaviour_logprobs.detach()
    log_ratio = new_logprobs - behaviour_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * advantages
    per_token = -torch.minimum(unclipped, clipped)
    reference_kl: torch.Tensor | None = None
    if reference_logprobs is not None:
        delta = reference_logprobs.detach() - new_logprobs
        reference_kl = torch.exp(delta) - delta - 1.0
        if kl_coef > 0:
            per_token = per_token + kl_coef * reference_kl
    loss = (weights * per_token).sum()

    with torch.no_grad():
        tokens = int(new_logprobs.shape[0])
        metrics = LossMetrics(
            tokens=tokens,
            clip_fraction=_mean(clipped < unclipped),
            ratio_mean=_mean(ratio),
            approx_kl=_mean((ratio - 1.0) - log_ratio),
            reference_kl=_mean(reference_kl) if reference_kl is not None else None,
        )
    return loss, metrics


def _mean(values: torch.Tensor) -> float:
    return float(values.float().mean()) if values.numel() else 0.0
