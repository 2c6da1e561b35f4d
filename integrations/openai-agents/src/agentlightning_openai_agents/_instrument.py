"""``instrument()`` / ``uninstrument()``: the processor in place of the SDK's exporter to OpenAI, and back."""

from __future__ import annotations

import logging
import os
import threading
import warnings
from typing import Any

from agents.tracing import TracingProcessor, get_trace_provider, set_trace_processors

from agentlightning_openai_agents.processor import LightningTracingProcessor

__all__ = ["TracingHidesWhatTrainingNeeds", "instrument", "instrumented_processor", "uninstrument"]

log = logging.getLogger("agentlightning.openai_agents")

_lock = threading.Lock()
_processor: LightningTracingProcessor | None = None
_previous: list[TracingProcessor] | None = None


class TracingHidesWhatTrainingNeeds(UserWarning):
    """The SDK is set up so that its traces lack what training needs (agent names, messages)."""


def instrument() -> LightningTracingProcessor:
    """Record every Agents SDK run in this process (inside a rollout) with one :class:`LightningTracingProcessor`,
    which is returned. It *replaces* the SDK's trace processors, its default exporter to OpenAI's trace ingest
    included, so no trace leaves the machine, even with ``OPENAI_API_KEY`` set. Calling it again changes nothing.

    Warns (:class:`TracingHidesWhatTrainingNeeds`) when the SDK's tracing is switched off (``set_tracing_disabled``,
    ``OPENAI_AGENTS_DISABLE_TRACING``: no spans, so no agent names) or excludes sensitive data
    (``OPENAI_AGENTS_TRACE_INCLUDE_SENSITIVE_DATA=false``: no messages on the spans). A run's own
    ``RunConfig(tracing_disabled=True)`` cannot be seen from here: such runs record nothing.
    """
    global _processor, _previous
    with _lock:
        if _processor is None:
            _previous = _current_processors()
            _processor = LightningTracingProcessor()
            set_trace_processors([_processor])
        processor = _processor
    _warn_if_hidden()
    return processor


def uninstrument() -> None:
    """Undo :func:`instrument`: the trace processors the SDK had before come back (its default exporter
    included). Calling it when not instrumented changes nothing."""
    global _processor, _previous
    with _lock:
        if _processor is None:
            return
        if _previous is not None:
            set_trace_processors(_previous)
        else:  # the SDK did not let us read them: its default is what it starts with
            from agents.tracing.processors import default_processor

            set_trace_processors([default_processor()])
        _processor, _previous = None, None


def instrumented_processor() -> LightningTracingProcessor | None:
    """The processor :func:`instrument` registered, or ``None`` when not instrumented."""
    return _processor


def _current_processors() -> list[TracingProcessor] | None:
    # The SDK has no public getter; both the 0.20 and the 0.24 providers keep them here.
    multi = getattr(get_trace_provider(), "_multi_processor", None)
    processors = getattr(multi, "_processors", None)
    return list(processors) if isinstance(processors, tuple) else None


def _warn_if_hidden() -> None:
    provider: Any = get_trace_provider()
    refresh = getattr(provider, "_refresh_disabled_flag", None)
    if callable(refresh):
        refresh()
    disabled = getattr(provider, "_disabled", None)
    if disabled is None:
        disabled = os.environ.get("OPENAI_AGENTS_DISABLE_TRACING", "false").lower() in ("true", "1")
    if disabled:
        warnings.warn(
            "The Agents SDK's tracing is disabled (set_tracing_disabled(True) or OPENAI_AGENTS_DISABLE_TRACING), so "
            "Agent Lightning records no agent runs: LLM calls reach the gateway without agent names, and selective "
            "training (agents=[...]) finds none. Turn tracing on; instrument() already keeps traces on this machine.",
            TracingHidesWhatTrainingNeeds,
            stacklevel=3,
        )
    if os.environ.get("OPENAI_AGENTS_TRACE_INCLUDE_SENSITIVE_DATA", "true").lower() in ("false", "0"):
        warnings.warn(
            "OPENAI_AGENTS_TRACE_INCLUDE_SENSITIVE_DATA is off, so the SDK's spans carry no messages or tool "
            "arguments; the gateway still records every LLM call's messages and token ids.",
            TracingHidesWhatTrainingNeeds,
            stacklevel=3,
        )
