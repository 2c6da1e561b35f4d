# The formulas are written in their papers' notation (Greek letters, ×, ℓ).
"""Group-relative advantages: GRPO over the calls of a group, optionally with GiGPO's step-level groups.

A *group* is the rollouts of one task (one ``group_id`` in the rollout metadata): rollouts ``i ∈ I``, each
with calls ``t = 1 … n_i`` and their returns ``G_{i,t}`` (:mod:`agentlightning_rl.credit`).

**Group advantage** (GRPO, Shao et al. 2024, *DeepSeekMath*, §4.1.2 outcome supervision)::

    μ = 1/|I| Σ_i 1/n_i Σ_t G_{i,t}                     (each rollout counts once, however many calls it made)
    σ = sqrt( 1/|I| Σ_i 1/n_i Σ_t (G_{i,t} - μ)² )
    A_group(i,t) = (G_{i,t} - μ) / (σ + ε)              if normalize_advantage_std
                 =  G_{i,t} - μ                          otherwise (Liu et al. 2025, "Dr. GRPO")

With ``credit="identical"`` every call of rollout ``i`` has ``G = R_i``, so ``μ`` and ``σ`` are the mean and
(population) standard deviation of the rollouts' rewards: exactly GRPO's outcome-supervised advantage,
given to every call. Weighting calls by ``1/n_i`` keeps a rollout that made many calls from pulling the
baseline towards its own reward. Rollouts without calls (of the trained agents) take no part.

**Step advantage** (GiGPO, Feng et al. 2025, *Group-in-Group Policy Optimization for LLM Agent
Training*, anchor-state grouping): calls of the group that saw the same state — same agent and identical
prompt token ids, typically the shared first turn, or a state two rollouts reached alike — form a step
group ``S``; each call is compared with the others that faced the very same choice::

    μ_S = 1/|S| Σ_{c∈S} G_c,   σ_S = sqrt( 1/|S| Σ_{c∈S} (G_c - μ_S)² )
    A_step(c) = (G_c - μ_S) / (σ_S + ε)   (or G_c - μ_S),   and 0 when |S| = 1
    A(c) = A_group(c) + ω · A_step(c)

**Skipped groups.** When every return of a group is equal, every advantage is zero and the group teaches
nothing (but costs a forward and backward pass): with ``skip_equal_groups`` it gives no samples and is
reported in :attr:`Advantages.skipped_groups`; without, its calls get advantage exactly 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agentlightning.types import Transition
from agentlightning_rl.config import LightningRLConfig
from agentlightning_rl.credit import CreditedTrajectory

__all__ = ["Advantages", "Sample", "compute_advantages", "group_advantages"]

#: Why a group gave no samples.
ALL_EQUAL = "all returns equal"
NO_CALLS = "no calls"


@dataclass(frozen=True)
class Sample:
    """One call to train on: the transition, its return and advantage, and where it came from."""

    transition: Transition
    advantage: float
    return_: float
    rollout_id: str | None
    group_id: str


@dataclass
class Advantages:
    """The samples of a batch of groups, and the groups that gave none (group id → why)."""

    samples: list[Sample] = field(default_factory=list)
    skipped_groups: dict[str, str] = field(default_factory=dict)


def group_advantages(group: Sequence[CreditedTrajectory], config: LightningRLConfig) -> list[list[float]] | None:
    """The advantage of every call of every rollout of one group (``result[i][t]``, formulas in the module
    docstring); ``None`` when all its returns are equal and ``config.skip_equal_groups`` is set.

    Raises:
        agentlightning.MissingTokenIds: with ``config.step_grouping``, a call has no prompt token ids
            (states are compared by token ids, never by re-tokenized text).
    """
    all_returns = [g for rollout in group for g in rollout.returns]
    if not all_returns:
        return [[] for _ in group]
    if min(all_returns) == max(all_returns):
        # Exactly zero, not the rounding noise of G - μ: nothing to learn from this group.
        return None if config.skip_equal_groups else [[0.0] * len(rollout.returns) for rollout in group]

    eps = config.advantage_epsilon
    rollouts = [rollout.returns for rollout in group if rollout.returns]
    mean = sum(sum(r) / len(r) for r in rollouts) / len(rollouts)
    std = math.sqrt(sum(sum((g - mean) ** 2 for g in r) / len(r) for r in rollouts) / len(rollouts))
    scale = 1.0 / (std + eps) if config.normalize_advantage_std else 1.0
    result = [[(g - mean) * scale for g in rollout.returns] for rollout in group]

    if config.step_grouping:
        steps: dict[tuple[str | None, tuple[int, ...]], list[tuple[int, int]]] = {}
        for i, rollout in enumerate(group):
            for t, transition in enumerate(rollout.transitions):
                prompt, _ = transition.token_ids()
                steps.setdefault((transition.agent_name, tuple(prompt)), []).append((i, t))
        for members in steps.values():
            if len(members) < 2:
                continue  # a state no other rollout reached: nothing to compare with
            values = [group[i].returns[t] for i, t in members]
            step_mean = sum(values) / len(values)
            step_std = math.sqrt(sum((g - step_mean) ** 2 for g in values) / len(values))
            step_scale = 1.0 / (step_std + eps) if config.normalize_advantage_std else 1.0
            for (i, t), g in zip(members, values, strict=True):
                result[i][t] += config.step_advantage_weight * (g - step_mean) * step_scale
    return result


def compute_advantages(groups: Mapping[str, Sequence[CreditedTrajectory]], config: LightningRLConfig) -> Advantages:
    """The samples of every group (group id → its rollouts' credited trajectories), in group and call order,
    and the groups that gave none (all returns equal, or no calls)."""
    result = Advantages()
    for group_id, group in groups.items():
        if not any(rollout.transitions for rollout in group):
            result.skipped_groups[group_id] = NO_CALLS
            continue
        advantages = group_advantages(group, config)
        if advantages is None:
            result.skipped_groups[group_id] = ALL_EQUAL
            continue
        for rollout, rollout_advantages in zip(group, advantages, strict=True):
            for transition, return_, advantage in zip(
                rollout.transitions, rollout.returns, rollout_advantages, strict=True
            ):
                result.samples.append(Sample(transition, advantage, return_, rollout.rollout_id, group_id))
    return result
