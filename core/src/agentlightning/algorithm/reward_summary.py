"""The two figures a trainer reports for a batch of rollouts: mean reward and success rate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

__all__ = ["RewardSummary", "reward_summary"]


class RewardSummary(TypedDict):
    """Spread into a trainer's iteration and validation records (``Record(..., **reward_summary(...))``)."""

    reward_mean: float
    success_rate: float


def reward_summary(rewards: Sequence[float], success_threshold: float) -> RewardSummary:
    """The mean reward of a batch of rollouts (at least one), and the share of them whose reward reached
    ``success_threshold``."""
    return {
        "reward_mean": sum(rewards) / len(rewards),
        "success_rate": sum(1 for r in rewards if r >= success_threshold) / len(rewards),
    }
