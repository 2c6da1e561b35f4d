"""Spans that integrations open when a framework's run starts and close when it ends.

An integration translates a framework's events (a chain started, a tool ended…) into spans of the active
rollout. :func:`begin_span` opens one (``None`` outside a rollout: nothing to record into) and
:meth:`OpenSpan.end` records it through the active tracer, like the emitters: a small record on the
agent's thread, validated and written in batches elsewhere. Ids, the trace, the parent and the rollout
are settled here once, so integrations only say what happened.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from agentlightning import semconv
from agentlightning.tracer._context import ACTIVE, ActiveRollout
from agentlightning.tracer.tracer import SpanRecord
from agentlightning.types import SpanKind, StatusCode

__all__ = ["OpenSpan", "begin_span"]


class OpenSpan(SpanRecord):
    """A span that has started and not yet ended. Not thread-safe: end it once, from one thread.

    It is its own record: :meth:`end` completes its fields and queues it on the tracer, so a span costs one
    object on the agent's thread. Its fields are the record's; leave them alone once it has ended.
    """

    __slots__ = ("_active", "ended")

    def __init__(
        self,
        active: ActiveRollout,
        name: str,
        kind: SpanKind,
        trace_id: str,
        parent_id: str | None,
        attributes: dict[str, Any],
        start_time: float,
    ) -> None:
        # The record's fields are set here rather than by its dataclass __init__: this runs for every span.
        self._active = active
        self.rollout_id = active.rollout_id
        self.attempt_id = active.attempt_id
        self.name = name
        self.kind = kind
        self.trace_id = trace_id
        self.span_id = f"{random.getrandbits(64):016x}"
        self.parent_id = parent_id
        self.attributes = attributes
        self.start_time = self.end_time = start_time
        self.status = StatusCode.UNSET
        self.description = None
        self.events = ()
        self.ended = False

    @property
    def traceparent(self) -> str:
        """This span as a W3C ``traceparent`` header, for a call it makes to another process (the gateway)."""
        return f"00-{self.trace_id}-{self.span_id}-01"

    def end(
        self,
        attributes: Mapping[str, Any] | None = None,
        *,
        error: str | None = None,
        end_time: float | None = None,
    ) -> None:
        """Record the span, with ``attributes`` added, as failed if ``error`` says why. Later calls do nothing."""
        if self.ended:
            return
        self.ended = True
        if attributes:
            self.attributes.update(attributes)
        self.end_time = time.time() if end_time is None else end_time
        if error is not None:
            self.status = StatusCode.ERROR
            self.description = error
        self._active.tracer.record(self)

    @contextmanager
    def current(self) -> Iterator[None]:
        """Make this span the current OpenTelemetry span inside the block, so spans recorded there (emitted
        rewards, OpenTelemetry instrumentations) become its children; when it names an agent
        (``gen_ai.agent.name``), LLM calls made there are that agent's for the gateway too."""
        from opentelemetry import trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

        context = SpanContext(
            int(self.trace_id, 16), int(self.span_id, 16), is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)
        )
        view = NonRecordingSpan(context)
        agent = self.attributes.get(semconv.GEN_AI_AGENT_NAME)
        if isinstance(agent, str):
            view.agentlightning_agent = agent  # type: ignore[attr-defined]  # read by current_agent()
        with trace.use_span(view, end_on_exit=False):
            yield


# OpenTelemetry's trace API, imported when first needed (importing agentlightning does not import OpenTelemetry).
_trace: Any = None
# The span context a parentless span last started under, and its ids as text (held, so never another's address).
_last_context: tuple[Any, str, str | None] = (None, "", None)


def _import_trace() -> Any:
    global _trace
    from opentelemetry import trace

    _trace = trace
    return trace


def begin_span(
    name: str,
    *,
    parent: OpenSpan | None = None,
    attributes: Mapping[str, Any] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    start_time: float | None = None,
) -> OpenSpan | None:
    """Open a span of the active rollout, a child of ``parent`` (default: the current OpenTelemetry span, e.g.
    the rollout's root span). Returns ``None`` outside a rollout, where there is nothing to record into.

    ``attributes`` must be OpenTelemetry attribute values (str, bool, int, float, or lists of one of them);
    the tracer validates them when it writes, and counts a span it cannot write as dropped.
    """
    global _last_context
    active = ACTIVE.get()
    if active is None:
        return None
    parent_id: str | None
    if parent is not None:
        trace_id, parent_id = parent.trace_id, parent.span_id
    else:
        context = (_trace or _import_trace()).get_current_span().get_span_context()
        last = _last_context
        if last[0] is context:  # another run under the same span (every agent run of a rollout: its root span)
            trace_id, parent_id = last[1], last[2]
        elif context.is_valid:
            trace_id, parent_id = f"{context.trace_id:032x}", f"{context.span_id:016x}"
            _last_context = (context, trace_id, parent_id)
        else:
            trace_id, parent_id = f"{random.getrandbits(128):032x}", None
    return OpenSpan(
        active,
        name,
        kind,
        trace_id,
        parent_id,
        dict(attributes) if attributes else {},
        time.time() if start_time is None else start_time,
    )
