"""Reading rewards back from spans."""

from __future__ import annotations

from collections.abc import Sequence

from agentlightning import semconv
from agentlightning.types import Span

__all__ = ["final_reward", "reward_of"]


def reward_of(span: Span) -> float | None:
    """The reward a reward span carries, or ``None`` if ``span`` is not a reward span."""
    if span.name != semconv.SPAN_REWARD:
        return None
    value = span.attributes.get(semconv.AGL_REWARD_VALUE)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def final_reward(spans: Sequence[Span]) -> float | None:
    """The last reward recorded among ``spans`` (one attempt's, in sequence order); ``None`` if there is none."""
    for span in reversed(spans):
        value = reward_of(span)
        if value is not None:
            return value
    return None
