"""The algorithm interface: what trainers implement, and the steps they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentlightning.store.base import LightningStore
from agentlightning.types import AnyResource, Resources, Rollout, RolloutConfig, RolloutMode, RolloutRequest, Span, Task

__all__ = ["Algorithm", "AlgorithmContext", "Dataset"]

#: A dataset: a sequence of ``agl.Task`` or of plain inputs (any JSON value).
Dataset = Sequence[Any]


@dataclass
class AlgorithmContext:
    """What the trainer hands an algorithm: the store, the adapter, the resources to start from."""

    store: LightningStore
    adapter: Any = None
    initial_resources: Mapping[str, AnyResource] | None = None
    rollout_config: RolloutConfig | None = None


class Algorithm(ABC):
    """Improves resources from rollouts. The trainer runs :meth:`run` while runners execute the rollouts.

    A typical iteration: :meth:`publish` resources, :meth:`enqueue` rollouts that name them,
    :meth:`wait` for them, read their spans (``store.query_spans``) through the adapter, update,
    publish the next version.
    """

    context: AlgorithmContext

    @abstractmethod
    async def run(self, train_dataset: Dataset | None, val_dataset: Dataset | None) -> Any:
        """Train (or evaluate); returns what the algorithm wants to report."""

    @property
    def store(self) -> LightningStore:
        """The store the trainer gave this algorithm."""
        return self.context.store

    async def publish(self, resources: Mapping[str, AnyResource] | None) -> Resources | None:
        """Publish a resources version (``None`` or empty: publish nothing, runners use the latest)."""
        if not resources:
            return None
        return await self.store.add_resources(resources)

    async def enqueue(
        self,
        dataset: Dataset,
        mode: RolloutMode,
        *,
        resources_id: str | None = None,
        group_size: int = 1,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[Rollout]:
        """Enqueue ``group_size`` rollouts of every task; rollouts of one task share a ``group_id``."""
        requests = []
        config = self.context.rollout_config or RolloutConfig()
        for index, item in enumerate(dataset):
            task = item if isinstance(item, Task) else None
            task_id = task.id if task is not None else str(index)
            for _ in range(group_size):
                requests.append(
                    RolloutRequest(
                        input=task.input if task is not None else item,
                        mode=mode,
                        resources_id=resources_id,
                        config=config,
                        metadata={**(metadata or {}), "task_id": task_id, "group_id": f"{mode.value}-{task_id}"},
                    )
                )
        return await self.store.enqueue_many_rollouts(requests)

    async def wait(self, rollouts: Sequence[Rollout], timeout: float | None = None) -> list[Rollout]:
        """Wait until the rollouts finish; returns them finished, in order."""
        return await self.store.wait_for_rollouts([r.rollout_id for r in rollouts], timeout=timeout)

    async def spans(self, rollout: Rollout) -> list[Span]:
        """The spans of a rollout's latest attempt."""
        return await self.store.query_spans(rollout.rollout_id, "latest")
