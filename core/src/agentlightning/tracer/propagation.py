"""W3C ``traceparent`` (and the agent's name) on the ``openai`` client's requests, so the gateway's span of a call
joins the caller's, and the gateway knows whose call it is while answering it.

The gateway records the ``traceparent`` header of each call as ``agentlightning.llm.caller_traceparent``; the
trajectory adapter then treats the caller's span as the gateway span's parent, and pairs the two when the caller's
span is an integration's record of the same LLM call (streamed answers included, whose response id frameworks
often drop). :func:`propagate_traceparent` makes every request the ``openai`` client sends inside an active
rollout carry the current OpenTelemetry span as that header.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from agentlightning.tracer._context import ACTIVE

__all__ = ["AGENT_HEADER", "current_agent", "propagate_traceparent"]

log = logging.getLogger("agentlightning.tracer")

#: The request header naming the agent a call belongs to: the gateway records it on the call's span and routes
#: by it (``Gateway(agent_models=...)``).
AGENT_HEADER = "x-agentlightning-agent"

_installed = False


def current_agent() -> str | None:
    """The agent whose code runs here, inside an active rollout: the ``agentlightning_agent`` of the current
    OpenTelemetry span. Integrations make spans current that carry it (``OpenSpan.current()`` does for a span
    with ``gen_ai.agent.name``), so the gateway learns whose call it gets before answering it."""
    if ACTIVE.get() is None:
        return None
    from opentelemetry import trace

    agent = getattr(trace.get_current_span(), "agentlightning_agent", None)
    return agent if isinstance(agent, str) and agent else None


def current_traceparent() -> str | None:
    """The current OpenTelemetry span as a ``traceparent`` header inside an active rollout, else ``None``."""
    if ACTIVE.get() is None:
        return None
    from opentelemetry import trace

    return _traceparent_of(trace.get_current_span())


def _traceparent_of(span: Any) -> str | None:
    # The project's view of the current run knows its header as text; any other span is formatted from its context.
    known = getattr(span, "agentlightning_traceparent", None)
    if isinstance(known, str):
        return known
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def propagate_traceparent() -> bool:
    """Make every request of the ``openai`` client carry the current span's ``traceparent`` inside a rollout, and
    the current agent (:func:`current_agent`) in the ``x-agentlightning-agent`` header when one is known.

    Installed once per process, and only once ``openai`` is imported (returns whether it is installed). The
    headers join the client's default headers as each request is built (``BaseClient.default_headers``, a property
    read once per request, the same in openai 1.x to 3.x), so they cover sync and async clients, streamed or not,
    over any HTTP client, and a request's own headers override them: where the caller sets its own
    ``traceparent`` (on the client or the call, lowercase as OpenTelemetry's propagators write it), that one
    goes. Outside a rollout requests are left as they are. (Adding them to the plain dict before the client makes
    its case-insensitive header object costs a few dict operations; every lookup in that object scans it whole.)
    """
    global _installed
    if _installed:
        return True
    if "openai" not in sys.modules:
        return False
    _installed = True
    try:
        from openai._base_client import BaseClient
    except ImportError:
        log.warning("openai is imported but has no BaseClient: LLM calls carry no traceparent for the gateway.")
        return False
    original = BaseClient.__dict__.get("default_headers")
    if not isinstance(original, property) or original.fget is None:
        log.warning(
            "openai %s has no BaseClient.default_headers property: LLM calls carry no traceparent, so the gateway's "
            "spans of streamed calls (whose response id frameworks drop) are not joined with the callers' spans.",
            getattr(sys.modules["openai"], "__version__", "?"),
        )
        return False
    headers_of = original.fget

    def default_headers(self: Any) -> Any:
        headers = headers_of(self)
        if ACTIVE.get() is None:
            return headers
        try:
            from opentelemetry import trace

            span = trace.get_current_span()
            if "traceparent" not in headers and (traceparent := _traceparent_of(span)) is not None:
                headers["traceparent"] = traceparent
            agent = getattr(span, "agentlightning_agent", None)
            if isinstance(agent, str) and agent and AGENT_HEADER not in headers:
                headers[AGENT_HEADER] = agent
        except Exception:
            log.exception("Could not add the traceparent header to an openai request")
        return headers

    BaseClient.default_headers = property(default_headers, doc=original.__doc__)  # type: ignore[method-assign,assignment]
    return True
