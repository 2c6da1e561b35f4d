"""The caller's W3C ``traceparent`` (and the agent's name) on the ``openai`` client's requests, so the gateway's
span of a call joins the caller's, and the gateway knows whose call it is while answering it.

The gateway records the caller's ``traceparent`` of each call as ``agentlightning.llm.caller_traceparent``; the
trajectory adapter then treats the caller's span as the gateway span's parent, and pairs the two when the caller's
span is an integration's record of the same LLM call (streamed answers included, whose response id frameworks
often drop). :func:`propagate_traceparent` makes every request the ``openai`` client sends inside an active
rollout carry the current OpenTelemetry span and agent, both in one header, ``x-agentlightning-caller``
(:func:`caller_header`): every header a request carries costs the HTTP client a pass over all of them several
times per request, and two headers cost an LLM call twice what one does. The gateway also takes the standard
``traceparent`` header and ``x-agentlightning-agent``, as any other client may send them.
"""

from __future__ import annotations

import functools
import logging
import sys
from typing import Any
from urllib.parse import quote, unquote

from agentlightning.tracer._context import ACTIVE

__all__ = [
    "AGENT_HEADER",
    "CALLER_HEADER",
    "caller_header",
    "current_agent",
    "parse_caller_header",
    "propagate_traceparent",
]

log = logging.getLogger("agentlightning.tracer")

#: The request header naming the agent a call belongs to (the gateway records it on the call's span and routes by
#: it: ``Gateway(agent_models=...)``), for clients that name it themselves; the core sends :data:`CALLER_HEADER`.
AGENT_HEADER = "x-agentlightning-agent"
#: The header the core adds to the ``openai`` client's requests inside a rollout: the current span's W3C
#: ``traceparent`` and the current agent's name (:func:`caller_header`).
CALLER_HEADER = "x-agentlightning-caller"


def caller_header(traceparent: str | None, agent: str | None) -> str:
    """The value of :data:`CALLER_HEADER`: ``traceparent=<W3C traceparent>;agent=<name>``, either part left out when
    unknown. The agent's name is percent-encoded (UTF-8), as header values are ASCII: ``Büro`` goes as
    ``B%C3%BCro``."""
    if agent:
        return f"traceparent={traceparent};{_agent_part(agent)}" if traceparent else _agent_part(agent)
    return f"traceparent={traceparent}" if traceparent else ""


@functools.lru_cache(maxsize=256)
def _agent_part(agent: str) -> str:
    # A process has a few agents, named on every request.
    return "agent=" + quote(agent, safe="")


def parse_caller_header(value: str | None) -> tuple[str | None, str | None]:
    """``(traceparent, agent)`` of a :data:`CALLER_HEADER` value (``None`` for a part it lacks; parts it does not
    know are ignored)."""
    traceparent = agent = None
    for part in (value or "").split(";"):
        key, _, text = part.strip().partition("=")
        if key == "traceparent" and text:
            traceparent = text
        elif key == "agent" and text:
            agent = unquote(text)
    return traceparent, agent


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
    """Make every request of the ``openai`` client carry, inside a rollout, the current span's ``traceparent`` and
    the current agent (:func:`current_agent`) when one is known, in the ``x-agentlightning-caller`` header.

    Installed once per process, and only once ``openai`` is imported (returns whether it is installed). The
    header joins the client's default headers as each request is built (``BaseClient.default_headers``, a property
    read once per request, the same in openai 1.x to 3.x), so it covers sync and async clients, streamed or not,
    over any HTTP client. A request's own standard headers win: where the caller sets its own ``traceparent`` or
    ``x-agentlightning-agent`` (on the call, or by OpenTelemetry's instrumentation of the HTTP client), the
    gateway takes those over this header's parts (and where they are among the client's default headers, the
    parts are left out). Outside a rollout requests are left as they are. (Adding it to
    the plain dict before the client makes its case-insensitive header object costs a few dict operations; every
    lookup in that object scans it whole.)
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
    from opentelemetry import trace  # (here, once: not on every request)

    def default_headers(self: Any) -> Any:
        headers = headers_of(self)
        if ACTIVE.get() is None:
            return headers
        try:
            span = trace.get_current_span()
            traceparent = None if "traceparent" in headers else _traceparent_of(span)
            agent = None if AGENT_HEADER in headers else getattr(span, "agentlightning_agent", None)
            value = caller_header(traceparent, agent if isinstance(agent, str) else None)
            if value and CALLER_HEADER not in headers:
                headers[CALLER_HEADER] = value
        except Exception:
            log.exception("Could not add the %s header to an openai request", CALLER_HEADER)
        return headers

    BaseClient.default_headers = property(default_headers, doc=original.__doc__)  # type: ignore[method-assign,assignment]
    return True
