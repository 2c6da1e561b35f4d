"""Event loops that the project runs in background threads (the tracer's writer, the store server, the gateway,
the engine's server), kept out of reach of other code's finalizers.

Python runs a garbage collection in whichever thread happens to allocate at that moment, and with it the
``__del__`` of every object the collection frees. Some libraries' finalizers schedule clean-up on "the running
loop": the ``openai`` package's async HTTP client, left unclosed by an agent that makes one per call, does
``asyncio.get_running_loop().create_task(self.aclose())``. Collected in one of the project's background threads,
that clean-up would run on the background loop while its sockets belong to the agent's loop, closing them from
the wrong thread: the agent's loop can then lose track of a socket, and a reply that has arrived is never read
(a rollout hangs for good). So a background loop refuses a task scheduled during a garbage collection in its own
thread, as a thread with no running loop would; the library's finalizer then leaves the client to the loop it
belongs to.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Coroutine, Generator
from typing import Any

__all__ = ["guard_background_loop"]

# The threads that are running a garbage collection now.
_collecting: set[int] = set()
_installed = False
_install_lock = threading.Lock()


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _collecting.add(threading.get_ident())
    else:
        _collecting.discard(threading.get_ident())


def guard_background_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Make ``loop`` (run by a background thread of the project) refuse tasks that a finalizer schedules during a
    garbage collection in that thread; every other task is created as before."""
    global _installed
    with _install_lock:
        if not _installed:
            gc.callbacks.append(_on_gc)
            _installed = True
    previous = loop.get_task_factory()

    def create_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any], **kwargs: Any
    ) -> asyncio.Future[Any]:
        if threading.get_ident() in _collecting:
            coro.close()
            raise RuntimeError("A finalizer may not schedule work on a background event loop of Agent Lightning.")
        if previous is not None:
            return previous(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(create_task)
