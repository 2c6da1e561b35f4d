"""Wake coroutines waiting for rollouts to finish, or for the queue to get a rollout, across threads and event
loops."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable


class Waiter:
    """One waiting call: an event set (in its own loop) when any of its rollouts finishes (``wait_for_rollouts``),
    or, with no rollouts, when a rollout is queued (a waiting dequeue)."""

    __slots__ = ("event", "loop", "rollout_ids")

    def __init__(self, rollout_ids: Iterable[str] = ()) -> None:
        self.rollout_ids = frozenset(rollout_ids)
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()


class WaiterRegistry:
    """Who waits for which rollout, and who waits for the queue. ``notify`` and ``notify_queued`` may be called
    from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_rollout: dict[str, set[Waiter]] = {}
        self._for_queue: set[Waiter] = set()

    def watch_queue(self, waiter: Waiter) -> None:
        with self._lock:
            self._for_queue.add(waiter)

    def unwatch_queue(self, waiter: Waiter) -> None:
        with self._lock:
            self._for_queue.discard(waiter)

    def notify_queued(self) -> None:
        """A rollout was queued (or requeued): wake every waiting dequeue."""
        with self._lock:
            woken = list(self._for_queue)
        _wake(woken)

    def add(self, waiter: Waiter) -> None:
        with self._lock:
            for rollout_id in waiter.rollout_ids:
                self._by_rollout.setdefault(rollout_id, set()).add(waiter)

    def remove(self, waiter: Waiter) -> None:
        with self._lock:
            for rollout_id in waiter.rollout_ids:
                waiting = self._by_rollout.get(rollout_id)
                if waiting is not None:
                    waiting.discard(waiter)
                    if not waiting:
                        del self._by_rollout[rollout_id]

    def notify(self, rollout_ids: Iterable[str]) -> None:
        with self._lock:
            woken = {w for rid in rollout_ids for w in self._by_rollout.get(rid, ())}
        _wake(woken)


def _wake(waiters: Iterable[Waiter]) -> None:
    for waiter in waiters:
        try:
            waiter.loop.call_soon_threadsafe(waiter.event.set)
        except RuntimeError:  # that loop is closed; its waiter is gone
            pass
