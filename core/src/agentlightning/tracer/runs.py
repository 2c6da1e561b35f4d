"""Which recorded framework run is current, for what happens inside it but outside the framework's callbacks.

An integration records a framework's runs (a chain, a node, an agent, an LLM call, a tool call) as spans, from
callbacks the framework calls when a run starts and ends. Two things need the run a piece of code executes in,
and frameworks tell neither:

- **Emitted rewards** (``agl.emit_reward`` inside a tool or a graph node) become children of the current
  OpenTelemetry span. So a run's span is made current when the run starts (:func:`enter_run`): frameworks call a
  run's start callback in the context its body then runs in (or copies from), so the body sees the span.
- **The join with the gateway.** Frameworks often drop the response id of a streamed answer, so the gateway's span
  of a call cannot always be paired by ``gen_ai.response.id``. Instead, every request the ``openai`` client makes
  inside a recorded run carries the current span's W3C ``traceparent`` (in its ``x-agentlightning-caller`` header:
  :func:`~agentlightning.tracer.propagate_traceparent`); with the LLM call's span current, the gateway records it
  as ``agentlightning.llm.caller_traceparent`` and the trajectory adapter pairs its span with the LLM-call span it
  names, streamed or not, however many calls run in parallel. The request names the call's agent too
  (in the same header, from the view's ``agentlightning_agent``: the innermost open run whose span has
  ``gen_ai.agent.name``), so a gateway that routes agents to models of their own (one LoRA adapter per trained
  agent) sends it to the right one.

Frameworks call a run's start callback in the context its body runs in, but often its end callback in a copy of
that context (LangGraph does for nodes and graphs), so a run that ends cannot restore what was current before it
where it matters. Instead, what is set current is a live view of the run: while the run is open it is the run's
span; once it has ended it is the innermost enclosing run that is still open (or, past the outermost, the span that
was current before it). Whatever context still holds an ended run sees the right span without being told.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN_CONTEXT, NonRecordingSpan, SpanContext, TraceFlags

from agentlightning import semconv
from agentlightning.tracer.spans import OpenSpan

__all__ = ["Run", "current_run", "enter_run", "leave_run"]

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


class Run:
    """One framework run being recorded: its open span, and the run that was current when it started."""

    __slots__ = ("context", "ended", "outer_run", "outer_span", "own", "span")

    def __init__(self, span: OpenSpan, own: bool = True) -> None:
        self.span = span
        # False for a run without a span of its own (LangChain's hidden runs): it stands for its parent's span, so
        # its children hang there.
        self.own = own
        self.ended = False
        self.outer_run: Run | None = None
        self.outer_span: trace.Span | None = None
        self.context: SpanContext | None = None


def _live(run: Run | None) -> Run | None:
    """``run`` if it is open, else the innermost open run it started in (``None`` when they have all ended)."""
    while run is not None and run.ended:
        run = run.outer_run
    return run


_CURRENT: ContextVar[Run | None] = ContextVar("agentlightning_run", default=None)


def _context_of(run: Run) -> SpanContext:
    # Made when first asked for: most runs' spans are never the parent of anything recorded without one.
    if run.context is None:
        span = run.span
        run.context = SpanContext(int(span.trace_id, 16), int(span.span_id, 16), is_remote=False, trace_flags=_SAMPLED)
    return run.context


class _CurrentRunSpan(NonRecordingSpan):
    """The current OpenTelemetry span wherever runs are recorded: the live view described in the module docs.

    One object serves every context: it reads the context's current run each time it is asked, so entering and
    leaving a run only sets a ``ContextVar`` (OpenTelemetry's context, a copied dict, is attached once).
    """

    def __init__(self) -> None:
        super().__init__(INVALID_SPAN_CONTEXT)

    def get_span_context(self) -> SpanContext:
        run = _CURRENT.get()
        while run is not None and run.ended:
            if run.outer_run is None:
                return run.outer_span.get_span_context() if run.outer_span is not None else INVALID_SPAN_CONTEXT
            run = run.outer_run
        return _context_of(run) if run is not None else INVALID_SPAN_CONTEXT

    @property
    def agentlightning_traceparent(self) -> str | None:
        """The innermost open run's span as a ``traceparent`` header (read by the ``openai`` requests' headers,
        without going through a ``SpanContext``); ``None`` where no run is open, and the span current before
        them decides."""
        run = _live(_CURRENT.get())
        return run.span.traceparent if run is not None else None

    @property
    def agentlightning_agent(self) -> str | None:
        """The agent of the innermost open run that names one: the core puts it on the LLM requests made here, so
        the gateway knows whose call it answers (and can route it to that agent's model)."""
        run = _live(_CURRENT.get())
        while run is not None:
            agent = run.span.attributes.get(semconv.GEN_AI_AGENT_NAME)
            if isinstance(agent, str):
                return agent
            run = _live(run.outer_run)
        return None


_VIEW = _CurrentRunSpan()


def _otel_context_variable() -> tuple[ContextVar[Any], str] | None:
    """OpenTelemetry's own context variable and the key of the current span in it, where its runtime context is
    the standard one (``contextvars``): entering a run reads them directly, instead of through the four calls of
    ``trace.get_current_span()``. ``None`` (and the public calls) with any other runtime context."""
    variable = getattr(getattr(otel_context, "_RUNTIME_CONTEXT", None), "_current_context", None)
    key = getattr(trace.propagation, "_SPAN_KEY", None)
    return (variable, key) if isinstance(variable, ContextVar) and isinstance(key, str) else None


_OTEL = _otel_context_variable()


def _settled(span: trace.Span) -> trace.Span | None:
    """``span``, or if it is the view and all its runs have ended, the span that was current before them: what a
    run stores to fall back on, so that runs made one after another in one context never chain up."""
    if span is not _VIEW:
        return span
    run = _CURRENT.get()
    while run is not None and run.ended and run.outer_run is not None:
        run = run.outer_run
    if run is None or run.ended:
        return run.outer_span if run is not None else None  # never the view itself: it would ask itself
    return span


def current_run() -> Run | None:
    """The innermost open recorded run that is current here, if any."""
    return _live(_CURRENT.get())


def enter_run(run: Run) -> None:
    """Make ``run`` the current run, and its span the current OpenTelemetry span, in this context."""
    outer = _CURRENT.get()
    if outer is not None and outer.ended:  # (tested first: entering a run runs for every span)
        outer = _live(outer)
    run.outer_run = outer
    # Inside a recorded run the view is current already (the common case, read directly); else ask OpenTelemetry.
    current = _OTEL[0].get().get(_OTEL[1]) if _OTEL is not None else None
    if current is None:
        current = trace.get_current_span()
    if outer is None:
        run.outer_span = _settled(current)
    if current is not _VIEW:
        _make_current(_VIEW)
    _CURRENT.set(run)


def leave_run(run: Run) -> None:
    """Mark ``run`` ended: wherever it is still current, its enclosing open run now is."""
    run.ended = True
    if _CURRENT.get() is run:  # ended where it started (a plain call): put back what was current before
        outer = run.outer_run
        if outer is not None and outer.ended:
            outer = _live(outer)
        _CURRENT.set(outer)
        if outer is None and run.outer_span is not None:
            _make_current(run.outer_span)


def _make_current(span: trace.Span) -> None:
    """``otel_context.attach(trace.set_span_in_context(span))`` (the token unused), in one step where OpenTelemetry's
    context variable is at hand: once for every outermost run when it starts and ends."""
    if _OTEL is None:
        otel_context.attach(trace.set_span_in_context(span))
    else:
        variable, key = _OTEL
        variable.set(otel_context.Context({**variable.get(), key: span}))
