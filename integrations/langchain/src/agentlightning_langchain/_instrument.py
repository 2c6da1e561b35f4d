"""``instrument()`` / ``uninstrument()``: the handler on every LangChain run in the process, and off again."""

from __future__ import annotations

import threading
from contextvars import ContextVar
from typing import Any, cast

from langchain_core.tracers.context import register_configure_hook

from agentlightning_langchain.handler import LightningCallbackHandler

__all__ = ["instrument", "instrumented_handler", "uninstrument"]


class _ProcessSwitch:
    """What langchain-core's configure hook reads to add a handler to every run: ``get()`` gives the handler while
    instrumented, ``None`` otherwise.

    The hook is written for a ``ContextVar``, but a ``ContextVar`` set in ``instrument()`` reaches only the contexts
    copied from that one afterwards, never a thread started before or an event loop's task made elsewhere; hooks
    cannot be unregistered either. This object has the one method the hook calls and one value for the whole
    process, so ``instrument()`` reaches every run wherever it starts and ``uninstrument()`` switches it off.
    """

    def __init__(self) -> None:
        self.handler: LightningCallbackHandler | None = None

    def get(self) -> LightningCallbackHandler | None:
        return self.handler


_SWITCH = _ProcessSwitch()
_lock = threading.Lock()
_registered = False


def instrument() -> LightningCallbackHandler:
    """Record every LangChain / LangGraph run in this process (inside a rollout) with one shared
    :class:`LightningCallbackHandler`, which is returned. Calling it again changes nothing."""
    global _registered
    with _lock:
        if not _registered:
            # inheritable: child runs (graph nodes, the model and tools they call) get the handler too.
            register_configure_hook(cast("ContextVar[Any | None]", _SWITCH), inheritable=True)
            _registered = True
        if _SWITCH.handler is None:
            _SWITCH.handler = LightningCallbackHandler()
        return _SWITCH.handler


def uninstrument() -> None:
    """Undo :func:`instrument`: runs that start from now on are no longer recorded (handlers passed explicitly
    still are). Calling it when not instrumented changes nothing."""
    with _lock:
        _SWITCH.handler = None


def instrumented_handler() -> LightningCallbackHandler | None:
    """The handler :func:`instrument` attached to every run, or ``None`` when not instrumented."""
    return _SWITCH.handler
