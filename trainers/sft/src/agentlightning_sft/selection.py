"""Which rollouts are trained on: rejection sampling over an iteration's rollouts.

Each finished rollout becomes a :class:`Candidate`: its final reward, and the selected agents' calls read twice
from the same spans, as token ids (:class:`~agentlightning.TraceToTrajectory`, for training) and as chat
messages (:class:`~agentlightning.TraceToMessages`, for export). Then :func:`select_rollouts` keeps::

    passed   = { c : c succeeded, has a reward, has calls, reward(c) ≥ min_reward }
    selected = for each task, its best_of_n candidates in ``passed`` by reward (ties: the earlier rollout)

or whatever ``select(candidates)`` returns when you give a function of your own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import agentlightning as agl
from agentlightning.adapter import AgentSelector, ChatExample
from agentlightning.store.base import LightningStore
from agentlightning.types import Rollout, RolloutStatus, Trajectory

__all__ = ["Candidate", "read_candidates", "select_rollouts"]


@dataclass(frozen=True)
class Candidate:
    """One finished rollout, as selection sees it."""

    rollout: Rollout
    #: The task the rollout ran (its ``group_id``: the rollouts of one task share it).
    task_id: str
    #: The attempt's final reward; ``None`` when it recorded none.
    reward: float | None
    #: The selected agents' calls with their token ids (what is trained on).
    trajectory: Trajectory
    #: The same calls as chat examples, tool calls included (what is exported).
    examples: list[ChatExample]

    @property
    def succeeded(self) -> bool:
        """Whether the rollout ended well (a failed one is never selected by the built-in rules)."""
        return self.rollout.status == RolloutStatus.SUCCEEDED


async def read_candidates(
    store: LightningStore, rollouts: Sequence[Rollout], agents: AgentSelector = None
) -> list[Candidate]:
    """The candidates of finished ``rollouts``, in their order, from the spans of each one's latest attempt."""
    to_trajectory, to_messages = agl.TraceToTrajectory(agents), agl.TraceToMessages(agents)
    spans = await asyncio.gather(*(store.query_spans(r.rollout_id, "latest") for r in rollouts))
    candidates: list[Candidate] = []
    for rollout, rollout_spans in zip(rollouts, spans, strict=True):
        trajectory = to_trajectory.adapt(rollout_spans)
        candidates.append(
            Candidate(
                rollout=rollout,
                task_id=str(rollout.metadata.get("group_id", rollout.rollout_id)),
                reward=trajectory.final_reward,
                trajectory=trajectory,
                examples=to_messages.adapt(rollout_spans),
            )
        )
    return candidates


def select_rollouts(
    candidates: Sequence[Candidate],
    *,
    min_reward: float | None = 1.0,
    best_of_n: int | None = 1,
) -> list[Candidate]:
    """The candidates to train on, in their original order (module docstring).

    A candidate that failed, recorded no reward, or holds no call of the selected agents is never kept.
    """
    passed = [
        (position, c)
        for position, c in enumerate(candidates)
        if c.succeeded
        and c.reward is not None
        and c.trajectory.transitions
        and (min_reward is None or c.reward >= min_reward)
    ]
    if best_of_n is None:
        return [c for _, c in passed]
    by_task: dict[str, list[tuple[int, Candidate]]] = {}
    for position, candidate in passed:
        by_task.setdefault(candidate.task_id, []).append((position, candidate))
    kept: list[tuple[int, Candidate]] = []
    for group in by_task.values():
        # Sorting is stable: among equal rewards the earlier rollout comes first.
        kept += sorted(group, key=lambda item: -(item[1].reward or 0.0))[:best_of_n]
    return [c for _, c in sorted(kept, key=lambda item: item[0])]
