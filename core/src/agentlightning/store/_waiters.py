"""Wake coroutines waiting for rollouts to finish, across threads and event loops."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable


class Waiter:
    """One ``wait_for_rollouts`` call: an event set (in its own loop) when any of its rollouts finishes."""

    __slots__ = ("event", "loop", "rollout_ids")

    def __init__(self, rollout_ids: Iterable[str]) -> None:
        self.rollout_ids = frozenset(rollout_ids)
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()


class WaiterRegistry:
    """Who waits for which rollout. ``notify`` may be called from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_rollout: dict[str, set[Waiter]] = {}

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
        for waiter in woken:
            try:
                waiter.loop.call_soon_threadsafe(waiter.event.set)
            except RuntimeError:  # that loop is closed; its waiter is gone
                pass
