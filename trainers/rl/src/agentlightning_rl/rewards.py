# The formulas are written in their papers' notation (Greek letters, ×, ℓ).
"""Automatic intermediate rewards from runtime signals the spans already hold (off by default).

The rules (:class:`~agentlightning_rl.config.RuntimeRewardRules`) read an attempt's **spans**, where the
signals are, and add their rewards to the **trajectory** the adapter built from the same spans:

1. :func:`runtime_rewards` finds the signals: a tool call that failed (a span with ``gen_ai.operation.name
   = "execute_tool"`` whose status is error or that carries ``error.type``), an ``agentlightning.exception``
   span, or an ``agentlightning.annotation`` span carrying a configured key. Each gives one
   :class:`RuntimeReward` at the moment the signal began (the span's ``start_time``). Signals inside a
   reward computation (an LLM judge's failing tool) are not the agent's and give none.
2. :func:`add_runtime_rewards` assigns each one like an ``agl.emit_reward`` recorded at that moment: to the
   last call that ended at or before it, adding to its ``Transition.reward``::

       owner(s) = argmax_t { end_t : end_t ≤ time(s) }      Transition.reward_t += Σ_{owner(s)=t} value(s)

   and to ``Trajectory.unassigned_rewards`` when no call ended before it. The final reward is untouched.

Why not write reward spans and adapt again: the adapter takes the *last* reward span as the final reward,
so a synthetic reward after the agent's (or in an attempt that recorded none, e.g. one that raised) would
replace it. Why assign on the trajectory rather than re-derive the call timeline from spans: the adapter
already joined gateway and integration spans into calls, once; this reuses its calls. The one requirement
is that the trajectory hold every agent's calls (adapt with ``agents=None``, select the trained agents
afterwards, as :mod:`agentlightning_rl.credit` also needs), so that a signal following an untrained
agent's call lands on that call, as an ``emit_reward`` would.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from agentlightning import semconv
from agentlightning.types import Span, StatusCode, Trajectory
from agentlightning_rl.config import RuntimeRewardRules

__all__ = ["RuntimeReward", "add_runtime_rewards", "runtime_rewards", "with_runtime_rewards"]


@dataclass(frozen=True)
class RuntimeReward:
    """One reward a rule derived from a span."""

    #: When the signal happened (the span's start time, seconds since the epoch).
    time: float
    value: float
    #: ``"tool_error"``, ``"exception"`` or ``"annotation:<key>"``.
    rule: str
    span_id: str


def runtime_rewards(spans: Sequence[Span], rules: RuntimeRewardRules) -> list[RuntimeReward]:
    """The rewards ``rules`` derive from the spans of one attempt, in time order."""
    if not rules.active:
        return []
    by_id = {span.span_id: span for span in spans}
    found: list[tuple[float, int, RuntimeReward]] = []
    for position, span in enumerate(spans):
        signals = _signals(span, rules)
        if signals and not _in_reward_computation(span, by_id):
            for rule, value in signals:
                found.append((span.start_time, position, RuntimeReward(span.start_time, value, rule, span.span_id)))
    found.sort(key=lambda item: (item[0], item[1]))
    return [reward for _, _, reward in found]


def add_runtime_rewards(trajectory: Trajectory, rewards: Sequence[RuntimeReward]) -> Trajectory:
    """A copy of ``trajectory`` with each reward added to the last call that ended at or before it."""
    if not rewards:
        return trajectory
    transitions = trajectory.transitions
    # Transitions are ordered by end time already (the adapter's order); a call without an end counts at its start.
    ends = [t.end_time if t.end_time is not None else t.start_time for t in transitions]
    added: dict[int, float] = {}
    unassigned = list(trajectory.unassigned_rewards)
    for reward in rewards:
        owner = bisect.bisect_right(ends, reward.time) - 1
        if owner < 0:
            unassigned.append(reward.value)
        else:
            added[owner] = added.get(owner, 0.0) + reward.value
    updated = [
        t.model_copy(update={"reward": (t.reward or 0.0) + added[i]}) if i in added else t
        for i, t in enumerate(transitions)
    ]
    return trajectory.model_copy(update={"transitions": updated, "unassigned_rewards": unassigned})


def with_runtime_rewards(trajectory: Trajectory, spans: Sequence[Span], rules: RuntimeRewardRules | None) -> Trajectory:
    """``trajectory`` (adapted from ``spans``) with the rewards of ``rules`` added; unchanged when ``rules`` is ``None``."""
    if rules is None:
        return trajectory
    return add_runtime_rewards(trajectory, runtime_rewards(spans, rules))


def _signals(span: Span, rules: RuntimeRewardRules) -> list[tuple[str, float]]:
    attributes = span.attributes
    signals: list[tuple[str, float]] = []
    if (
        rules.tool_error is not None
        and attributes.get(semconv.GEN_AI_OPERATION_NAME) == semconv.GEN_AI_OPERATION_EXECUTE_TOOL
        and (span.status.status_code == StatusCode.ERROR or semconv.ERROR_TYPE in attributes)
    ):
        signals.append(("tool_error", rules.tool_error))
    if rules.exception is not None and span.name == semconv.SPAN_EXCEPTION:
        signals.append(("exception", rules.exception))
    if rules.annotations and span.name == semconv.SPAN_ANNOTATION:
        for key, weight in rules.annotations.items():
            if (semconv.AGL_ANNOTATION_PREFIX + key) in attributes:
                value = attributes[semconv.AGL_ANNOTATION_PREFIX + key]
                # bool before int: True is an int to isinstance, and counts 1 either way.
                scale = float(value) if isinstance(value, bool | int | float) else 1.0
                signals.append((f"annotation:{key}", weight * scale))
    return signals


def _in_reward_computation(span: Span, by_id: dict[str, Span]) -> bool:
    """Whether ``span`` or an ancestor is marked ``agentlightning.operation.kind = "reward"`` (an LLM judge)."""
    seen: set[str] = set()
    node: Span | None = span
    while node is not None and node.span_id not in seen:
        if node.attributes.get(semconv.AGL_OPERATION_KIND) == semconv.OPERATION_KIND_REWARD:
            return True
        seen.add(node.span_id)
        node = by_id.get(node.parent_id) if node.parent_id is not None else None
    return False
