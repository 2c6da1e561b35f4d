"""The span tree of one attempt, and what a span inherits from its ancestors.

Two things the adapters need are properties of a span's ancestry, not of the span itself: which
agent an LLM call belongs to (the nearest ``gen_ai.agent.name`` up the tree) and whether it runs
inside a reward computation (an ancestor marked ``agentlightning.operation.kind = "reward"``).
Both are resolved once per span and memoised along the path, so a whole attempt costs O(spans).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TypeVar

from agentlightning import semconv
from agentlightning.types import Span

__all__ = ["SpanTree"]

_T = TypeVar("_T")

# W3C traceparent: version-traceid-parentid-flags; the third field is the caller's span id.
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-([0-9a-f]{16})-[0-9a-f]{2}$")


class SpanTree:
    """Parent links among the spans of one attempt.

    A span's parent is the span named by its ``parent_id``. The gateway records LLM calls from
    another process, so its spans may have no parent here; for those (and for any span whose
    ``parent_id`` is not among the attempt's spans) the caller's span named in
    ``agentlightning.llm.caller_traceparent`` stands in as the parent. A parent that is not among
    the spans ends the walk; so does a cycle, which only malformed data can make.
    """

    def __init__(self, spans: Sequence[Span]) -> None:
        self._by_id: dict[str, Span] = {}
        for span in spans:
            # The store keeps one span per id and attempt; if a caller passes duplicates, the first wins.
            self._by_id.setdefault(span.span_id, span)
        self._agent_memo: dict[str, str | None] = {}
        self._reward_memo: dict[str, bool] = {}

    def parent_of(self, span: Span) -> Span | None:
        """The span's parent among the attempt's spans, or ``None`` for a root."""
        if span.parent_id is not None:
            parent = self._by_id.get(span.parent_id)
            if parent is not None:
                return parent
        traceparent = span.attributes.get(semconv.AGL_CALLER_TRACEPARENT)
        if isinstance(traceparent, str):
            match = _TRACEPARENT.match(traceparent.strip().lower())
            if match is not None:
                return self._by_id.get(match.group(1))
        return None

    def agent_name(self, span: Span) -> str | None:
        """The span's own ``gen_ai.agent.name``, else its nearest ancestor's, else ``None``."""
        return self._inherit(span, _own_agent_name, self._agent_memo, None)

    def in_reward_computation(self, span: Span) -> bool:
        """Whether the span or one of its ancestors is a reward computation (e.g. an LLM judge)."""
        return self._inherit(span, _own_reward_mark, self._reward_memo, False)

    def _inherit(self, span: Span, own: Callable[[Span], _T | None], memo: dict[str, _T], default: _T) -> _T:
        """Walk up from ``span`` to the first span that has its ``own`` value (or a memoised one).

        Every span passed on the way inherits that value and is memoised, so later walks through
        them stop at once. Iterative, since agent frameworks can nest spans very deep.
        """
        path: list[str] = []
        seen: set[str] = set()
        value = default
        node: Span | None = span
        while node is not None:
            if node.span_id in memo:
                value = memo[node.span_id]
                break
            if node.span_id in seen:
                break
            seen.add(node.span_id)
            mine = own(node)
            if mine is not None:
                value = mine
                break
            path.append(node.span_id)
            node = self.parent_of(node)
        for span_id in path:
            memo[span_id] = value
        if node is not None and node.span_id not in memo:
            memo[node.span_id] = value
        return value


def _own_agent_name(span: Span) -> str | None:
    name = span.attributes.get(semconv.GEN_AI_AGENT_NAME)
    return name if isinstance(name, str) and name else None


def _own_reward_mark(span: Span) -> bool | None:
    # ``None`` (not ``False``) for unmarked spans, so that they inherit from their ancestors.
    return True if span.attributes.get(semconv.AGL_OPERATION_KIND) == semconv.OPERATION_KIND_REWARD else None
