"""``instrument()`` / ``uninstrument()``: every CrewAI event through one listener where it is emitted, CrewAI's
telemetry and trace uploads off; and back."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from typing import Any

from crewai.events.event_bus import CrewAIEventsBus
from crewai.telemetry import Telemetry

from agentlightning_crewai.listener import LightningListener

__all__ = ["LOCAL_ONLY_ENVIRONMENT", "instrument", "instrumented_listener", "uninstrument"]

#: What ``instrument()`` sets in ``os.environ`` so that nothing of CrewAI's leaves the machine: its anonymous
#: telemetry (``CREWAI_DISABLE_TELEMETRY``, ``CREWAI_DISABLE_TRACKING``), its trace uploads to CrewAI's service
#: (``CREWAI_TRACING_ENABLED=false``), its first-run trace collection and the consent prompt after it
#: (``CREWAI_TESTING=true``: CrewAI reads it for nothing else; without it the first run of a machine waits 20 s
#: for an answer in a terminal), and its version check against PyPI. Not ``OTEL_SDK_DISABLED``: CrewAI reads it
#: as an opt-out too, but it switches off every OpenTelemetry SDK in the process, Agent Lightning's tracer
#: included.
LOCAL_ONLY_ENVIRONMENT = {
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_DISABLE_TRACKING": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "CREWAI_TESTING": "true",
    "CREWAI_DISABLE_VERSION_CHECK": "true",
}

_lock = threading.Lock()
_listener: LightningListener | None = None
_replaced: list[tuple[str, Any]] = []
_environment: dict[str, str | None] = {}


def _emitting(emit: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(emit)
    def recorded_emit(self: Any, source: Any, event: Any) -> Any:
        listener = _listener
        if listener is not None:
            listener.on_event(source, event)
        return emit(self, source, event)

    return recorded_emit


def _aemitting(aemit: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(aemit)
    async def recorded_aemit(self: Any, source: Any, event: Any) -> Any:
        listener = _listener
        if listener is not None:
            listener.on_event(source, event)
        return await aemit(self, source, event)

    return recorded_aemit


def instrument() -> LightningListener:
    """Record every CrewAI run in this process (inside a rollout) with one :class:`LightningListener`, which is
    returned; CrewAI's telemetry, trace uploads and version check are switched off (:data:`LOCAL_ONLY_ENVIRONMENT`).
    Calling it again changes nothing.

    The listener sees each event where CrewAI emits it (``CrewAIEventsBus.emit`` hands it over first), not in the
    bus's thread pool: there it could neither make an LLM call's span current for the request (the gateway's join)
    nor be sure to finish before the rollout does. CrewAI's own handlers run as before.
    """
    global _listener
    with _lock:
        if _listener is None:
            for name, value in LOCAL_ONLY_ENVIRONMENT.items():
                _environment[name] = os.environ.get(name)
                os.environ[name] = value
            # CrewAI's telemetry decides whether it is ready when first made (CrewAI 1.0 does on import), and
            # from then on installs its exporting tracer provider as the global one when a crew is made, whatever
            # the environment says: tell it it is not.
            Telemetry().ready = False
            for name, wrap in (("emit", _emitting), ("aemit", _aemitting)):
                original = CrewAIEventsBus.__dict__[name]
                _replaced.append((name, original))
                setattr(CrewAIEventsBus, name, wrap(original))
            _listener = LightningListener()
        return _listener


def uninstrument() -> None:
    """Undo :func:`instrument`: CrewAI's event bus is what it was, and so are the environment variables it set
    (CrewAI's telemetry stays off in this process). Calling it when not instrumented changes nothing."""
    global _listener
    with _lock:
        while _replaced:
            name, original = _replaced.pop()
            setattr(CrewAIEventsBus, name, original)
        for name, value in _environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _environment.clear()
        _listener = None


def instrumented_listener() -> LightningListener | None:
    """The listener :func:`instrument` hands CrewAI's events to, or ``None`` when not instrumented."""
    return _listener
