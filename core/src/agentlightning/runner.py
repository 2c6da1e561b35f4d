"""The runner: takes rollouts from the store, runs the agent on each under the tracer, and reports how it went."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from typing import Any

from pydantic import JsonValue

from agentlightning.agent import LitAgent
from agentlightning.errors import InvalidStatusTransition, StoreError
from agentlightning.store.base import LightningStore
from agentlightning.tracer.emit import emit_exception, emit_reward
from agentlightning.tracer.tracer import Tracer
from agentlightning.types import AttemptedRollout, AttemptStatus, Resources

__all__ = ["Runner", "AgentReturnedGarbage", "AgentTimedOut"]

log = logging.getLogger("agentlightning.runner")


class AgentReturnedGarbage(TypeError):
    """The agent returned something other than a number or ``None``."""


class AgentTimedOut(TimeoutError):
    """The agent ran past its rollout's ``timeout_seconds``."""


_EMPTY = Resources(resources_id="", version=0, created_time=0.0, resources={})


class Runner:
    """Runs ``agent`` on rollouts from ``store`` until stopped.

    For each rollout: fetch the resources version it names (or the latest), make its attempt active
    in the tracer, call the agent (sync agents in a thread), record what went wrong as an exception
    span, emit the returned reward, wait for the attempt's spans to be written, and end the attempt
    ``succeeded``, ``failed`` or ``timeout``. Heartbeats keep every running attempt alive; an attempt
    the store gave up on (unresponsive, cancelled) has its agent cancelled.

    ``max_concurrency`` rollouts run at once (default: 256 for async agents, 1 for sync ones).
    """

    def __init__(
        self,
        agent: LitAgent,
        store: LightningStore,
        *,
        max_concurrency: int | None = None,
        worker_id: str | None = None,
        heartbeat_interval: float = 5.0,
        poll_interval: float = 0.5,
        tracer: Tracer | None = None,
    ) -> None:
        if not isinstance(agent, LitAgent):
            raise TypeError(f"Runner needs an agl.LitAgent or an @agl.rollout function, not {type(agent).__name__}")
        self.agent = agent
        self.store = store
        self.max_concurrency = max_concurrency or (256 if agent.is_async else 1)
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{id(self) % 10_000}"
        self.heartbeat_interval = heartbeat_interval
        self.poll_interval = poll_interval
        self._tracer = tracer
        self._own_tracer = tracer is None
        self._resources: dict[str, Resources] = {}
        self._running: dict[str, tuple[AttemptedRollout, asyncio.Task[None]]] = {}
        self.completed = 0

    @property
    def tracer(self) -> Tracer:
        """The tracer writing this runner's spans (made on first use)."""
        if self._tracer is None:
            self._tracer = Tracer(self.store)
        return self._tracer

    async def run(
        self, *, stop: asyncio.Event | None = None, max_rollouts: int | None = None, idle_timeout: float | None = None
    ) -> int:
        """Run rollouts until ``stop`` is set, ``max_rollouts`` are done, or the queue stayed empty ``idle_timeout`` s.

        Returns how many rollouts this runner finished. Rollouts in flight when it stops are finished first.
        """
        stop = stop or asyncio.Event()
        slots = asyncio.Semaphore(self.max_concurrency)
        heartbeats = asyncio.create_task(self._heartbeats())
        started = 0
        idle_since = time.monotonic()
        delay = 0.01
        try:
            while not stop.is_set() and (max_rollouts is None or started < max_rollouts):
                await slots.acquire()
                if stop.is_set():
                    slots.release()
                    break
                try:
                    rollout = await self.store.dequeue_rollout(worker_id=self.worker_id)
                except StoreError as exc:
                    slots.release()
                    log.warning("Runner %s could not dequeue (%s); retrying", self.worker_id, exc)
                    rollout = None
                else:
                    if rollout is None:
                        slots.release()
                if rollout is None:
                    if idle_timeout is not None and not self._running and time.monotonic() - idle_since > idle_timeout:
                        break
                    try:
                        await asyncio.wait_for(stop.wait(), delay)
                    except TimeoutError:
                        pass
                    delay = min(delay * 2, self.poll_interval)
                    continue
                delay = 0.01
                idle_since = time.monotonic()
                started += 1
                task = asyncio.create_task(self._run_one(rollout, slots))
                self._running[rollout.attempt.attempt_id] = (rollout, task)
            if self._running:
                await asyncio.gather(*(task for _, task in list(self._running.values())), return_exceptions=True)
        finally:
            heartbeats.cancel()
            if self._own_tracer and self._tracer is not None:
                await self._tracer.flush()
        return self.completed

    def close(self) -> None:
        """Stop the runner's tracer thread (if the runner made it)."""
        if self._own_tracer and self._tracer is not None:
            self._tracer.close()
            self._tracer = None

    async def _resources_for(self, rollout: AttemptedRollout) -> Resources:
        if rollout.resources_id is None:
            latest = await self.store.get_latest_resources()
            return latest or _EMPTY
        cached = self._resources.get(rollout.resources_id)
        if cached is None:
            cached = await self.store.get_resources_by_id(rollout.resources_id)
            self._resources[rollout.resources_id] = cached
        return cached

    async def _call_agent(self, rollout: AttemptedRollout, resources: Resources) -> Any:
        if self.agent.is_async:
            return await self.agent.rollout(rollout.input, resources, rollout)  # type: ignore[misc]
        return await asyncio.to_thread(self.agent.rollout, rollout.input, resources, rollout)

    async def _run_one(self, rollout: AttemptedRollout, slots: asyncio.Semaphore) -> None:
        rid, aid = rollout.rollout_id, rollout.attempt.attempt_id
        status = AttemptStatus.FAILED
        try:
            async with self.tracer.trace(rid, aid, f"agentlightning.rollout {self.agent.name}"):
                try:
                    resources = await self._resources_for(rollout)
                    await self.store.update_attempt(rid, aid, status=AttemptStatus.RUNNING)
                    timeout = rollout.config.timeout_seconds
                    try:
                        result = await asyncio.wait_for(self._call_agent(rollout, resources), timeout)
                    except TimeoutError:
                        raise AgentTimedOut(
                            f"The agent ran past the rollout's timeout of {timeout:g} s and was stopped."
                        ) from None
                    if isinstance(result, bool) or not (result is None or isinstance(result, (int, float))):
                        raise AgentReturnedGarbage(
                            f"The agent returned {result!r} ({type(result).__name__}); return a float reward or None."
                        )
                    if result is not None:
                        if not math.isfinite(result):
                            raise AgentReturnedGarbage(f"The agent returned a non-finite reward {result!r}.")
                        emit_reward(float(result))
                    status = AttemptStatus.SUCCEEDED
                except asyncio.CancelledError:
                    emit_exception(
                        asyncio.CancelledError("The attempt was cancelled (the store ended it or the runner stopped).")
                    )
                    status = AttemptStatus.CANCELLED
                except AgentTimedOut as exc:
                    emit_exception(exc)
                    status = AttemptStatus.TIMEOUT
                except Exception as exc:
                    log.warning("Rollout %s attempt %s failed: %s: %s", rid, aid, type(exc).__name__, exc)
                    emit_exception(exc)
                    status = AttemptStatus.FAILED
            await self._finish(rollout, status)
        except Exception:
            log.exception("Runner %s could not report rollout %s", self.worker_id, rid)
        finally:
            self._running.pop(aid, None)
            slots.release()

    async def _finish(self, rollout: AttemptedRollout, status: AttemptStatus) -> None:
        rid, aid = rollout.rollout_id, rollout.attempt.attempt_id
        await self.tracer.flush()  # the rollout's spans are complete before anyone sees it finished
        dropped = self.tracer.dropped(aid)
        self.tracer.forget(aid)
        metadata: dict[str, JsonValue] | None = {"spans_dropped": dropped} if dropped else None
        try:
            await self.store.update_attempt(rid, aid, status=status, metadata=metadata)
        except InvalidStatusTransition as exc:
            log.warning("Rollout %s attempt %s was already ended by the store: %s", rid, aid, exc)
        self.completed += 1

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            for rollout, task in list(self._running.values()):
                try:
                    attempt = await self.store.heartbeat(rollout.rollout_id, rollout.attempt.attempt_id)
                except StoreError as exc:
                    log.warning("Heartbeat for rollout %s failed: %s", rollout.rollout_id, exc)
                    continue
                if attempt.is_finished and not task.done():
                    log.warning(
                        "The store ended rollout %s attempt %s as %s; cancelling its agent.",
                        rollout.rollout_id,
                        attempt.attempt_id,
                        attempt.status.value,
                    )
                    task.cancel()
