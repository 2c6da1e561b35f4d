"""Baseline: run the agent once over the data with the initial resources, and report the rewards."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from agentlightning.algorithm.base import Algorithm, Dataset
from agentlightning.reward import final_reward
from agentlightning.types import Rollout, RolloutMode, RolloutStatus

__all__ = ["Baseline", "BaselineResult"]


@dataclass
class BaselineResult:
    """Every rollout with its final reward (``None`` where the agent gave none or failed)."""

    rollouts: list[tuple[Rollout, float | None]] = field(default_factory=list)

    @property
    def mean_reward(self) -> float | None:
        """Mean final reward of the rollouts that have one."""
        rewards = [r for _, r in self.rollouts if r is not None]
        return sum(rewards) / len(rewards) if rewards else None

    @property
    def succeeded(self) -> int:
        """How many rollouts succeeded."""
        return sum(1 for rollout, _ in self.rollouts if rollout.status == RolloutStatus.SUCCEEDED)


class Baseline(Algorithm):
    """Runs every task ``n`` times (train tasks in train mode, validation tasks in val mode) and collects rewards."""

    def __init__(self, n: int = 1) -> None:
        self.n = n

    async def run(self, train_dataset: Dataset | None, val_dataset: Dataset | None) -> BaselineResult:
        resources = await self.publish(self.context.initial_resources)
        resources_id = resources.resources_id if resources else None
        rollouts: list[Rollout] = []
        for dataset, mode in ((train_dataset, RolloutMode.TRAIN), (val_dataset, RolloutMode.VAL)):
            if dataset:
                rollouts += await self.enqueue(dataset, mode, resources_id=resources_id, group_size=self.n)
        finished = await self.wait(rollouts)
        spans = await asyncio.gather(*(self.spans(r) for r in finished))
        return BaselineResult([(r, final_reward(s)) for r, s in zip(finished, spans, strict=True)])
