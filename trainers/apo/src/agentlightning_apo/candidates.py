"""Candidates and how the beam is chosen among them.

A candidate is one value of every optimized prompt (``{resource name: template text}``), published as one
resources version and scored by the mean reward of its validation rollouts, task by task.

**Beam** (``selection="beam"``): the ``beam_width`` candidates of highest mean score; ties go to the older
candidate, so an edit must do strictly better to displace its parent.

**Pareto** (``selection="pareto"``, after GEPA, Agrawal et al. 2025, "GEPA: Reflective Prompt Evolution Can
Outperform Reinforcement Learning"): a candidate stays when it has the highest score on at least one validation
task (ties included) and no other candidate dominates it (at least as good on every task, better on one). Of those,
the best mean always stays; the rest are ranked by the number of tasks they are best on, then by mean, and kept up
to ``beam_width``. Candidates that solve different tasks thus survive side by side for the next round's edits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Candidate", "SkippedEdit", "RoundRecord", "select_beam", "select_pareto", "best_of"]


@dataclass
class Candidate:
    """One value of the optimized prompts, where it came from, and how it scored."""

    #: ``c0`` for the seed, then ``c1``, ``c2``… in the order candidates were made.
    id: str
    #: 0 for the seed, else the round that made it.
    round: int
    #: The candidate it was edited from (``None`` for the seed).
    parent: str | None
    #: The prompt the edit changed (``None`` for the seed).
    edited: str | None
    #: Resource name → template text, for every optimized prompt.
    prompts: dict[str, str]
    #: The critique the edit followed.
    critique: str | None = None
    #: The resources version that holds it (every resource: the optimized prompts and the fixed ones).
    resources_id: str | None = None
    version: int | None = None
    #: Validation task id → mean reward of its rollouts.
    task_scores: dict[str, float] = field(default_factory=dict)
    #: Validation rollouts run, and how many of them failed.
    rollouts: int = 0
    failed_rollouts: int = 0

    @property
    def order(self) -> int:
        """The candidate's number: 0 for the seed, then in the order they were made."""
        return int(self.id[1:])

    @property
    def score(self) -> float:
        """The mean of the per-task scores (the mean validation reward); ``-inf`` before scoring."""
        return sum(self.task_scores.values()) / len(self.task_scores) if self.task_scores else float("-inf")


@dataclass
class SkippedEdit:
    """An edit that produced no candidate, and why (an unusable reply, a duplicate, an optimizer error)."""

    parent: str
    prompt: str
    reason: str


@dataclass
class RoundRecord:
    """What one round did."""

    round: int
    #: The beam the round expanded, and the training tasks (ids) their minibatch rollouts ran.
    parents: list[str]
    minibatch: list[str]
    #: Mean reward of each parent's minibatch rollouts (what its critiques read).
    parent_train_rewards: dict[str, float]
    #: The candidates the round made, and the edits that made none.
    children: list[str]
    skipped: list[SkippedEdit]
    #: The beam after selection, and the best candidate so far with its score.
    beam: list[str]
    best: str
    best_score: float
    seconds: float


def best_of(candidates: Sequence[Candidate]) -> Candidate:
    """The candidate of highest mean score; ties go to the older one."""
    return min(candidates, key=lambda c: (-c.score, c.order))


def select_beam(candidates: Sequence[Candidate], width: int) -> list[Candidate]:
    """The ``width`` candidates of highest mean score (ties: older first), best first."""
    return sorted(candidates, key=lambda c: (-c.score, c.order))[:width]


def select_pareto(candidates: Sequence[Candidate], width: int) -> list[Candidate]:
    """The candidates best on some task and dominated by none, at most ``width``; the best mean first."""
    tasks = sorted({task for c in candidates for task in c.task_scores})
    top = {task: max(c.task_scores.get(task, float("-inf")) for c in candidates) for task in tasks}
    wins = {c.id: sum(1 for task in tasks if c.task_scores.get(task, float("-inf")) >= top[task]) for c in candidates}
    front = [
        c
        for c in candidates
        if wins[c.id] > 0 and not any(_dominates(other, c, tasks) for other in candidates if other is not c)
    ]
    best = best_of(candidates)
    rest = sorted((c for c in front if c is not best), key=lambda c: (-wins[c.id], -c.score, c.order))
    return [best, *rest][:width]


def _dominates(a: Candidate, b: Candidate, tasks: Sequence[str]) -> bool:
    """Whether ``a`` scores at least ``b``'s on every task and more on one."""
    low = float("-inf")
    pairs = [(a.task_scores.get(t, low), b.task_scores.get(t, low)) for t in tasks]
    return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)
