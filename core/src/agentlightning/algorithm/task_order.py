"""Training tasks in a shuffled order: pass after pass over the training set, each pass a new permutation."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Protocol

from agentlightning.algorithm.base import Dataset

__all__ = ["TaskOrder", "next_tasks"]


class _Pass(Protocol):
    order: list[int]
    position: int


@dataclass
class TaskOrder:
    """Where a run stands in its passes over the training set.

    Attributes:
        order: the current pass, a permutation of the set's indices (empty before the first).
        position: how many of them were taken.
    """

    order: list[int] = field(default_factory=list)
    position: int = 0


def next_tasks(dataset: Dataset, count: int, order: _Pass, rng: random.Random) -> list[Any]:
    """The next ``count`` items of ``dataset`` in the shuffled order; advances ``order`` past them.

    When a pass runs out, the next one is ``range(len(dataset))`` shuffled by ``rng``. So every item comes once
    a pass, and a batch repeats an item only when it spans two passes. ``order`` is a :class:`TaskOrder` or
    anything with the same two attributes (LightningRL's ``TrainingState``, which checkpoints them);
    with it and ``rng``'s state a resumed run draws what the interrupted one would have.
    """
    tasks: list[Any] = []
    while len(tasks) < count:
        if order.position >= len(order.order):
            order.order = list(range(len(dataset)))
            rng.shuffle(order.order)
            order.position = 0
        tasks.append(dataset[order.order[order.position]])
        order.position += 1
    return tasks
