"""The runner: takes rollouts from the store, runs the agent on each under the tracer, and reports how it went."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import os
import socket
import threading
import time
from typing import Any

from pydantic import JsonValue

from agentlightning.agent import LitAgent
from agentlightning.errors import InvalidStatusTransition, StoreError
from agentlightning.store.base import LightningStore
from agentlightning.tracer.emit import emit_exception, emit_reward
from agentlightning.tracer.tracer import Tracer
from agentlightning.types import LLM, AttemptedRollout, AttemptStatus, Resources

__all__ = ["Runner", "AgentReturnedGarbage", "AgentTimedOut"]

log = logging.getLogger("agentlightning.runner")


class AgentReturnedGarbage(TypeError):
    """The agent returned something other than a number or ``None``."""


class AgentTimedOut(TimeoutError):
    """The agent ran past its rollout's ``timeout_seconds``."""


_EMPTY = Resources(resources_id="", version=0, created_time=0.0, resources={})


def _timed_out(rollout: AttemptedRollout) -> AgentTimedOut:
    timeout = rollout.config.timeout_seconds
    return AgentTimedOut(f"The agent ran past the rollout's timeout of {timeout:g} s and was stopped.")


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the runner stopped waiting (timeout, cancel)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _attributed(resources: Resources, rollout: AttemptedRollout) -> Resources:
    """The resources with every gateway LLM's URL naming this attempt, so the gateway records its calls here."""
    if not any(isinstance(r, LLM) and r.gateway for r in resources.resources.values()):
        return resources
    rid, aid = rollout.rollout_id, rollout.attempt.attempt_id
    attributed = {name: r.for_attempt(rid, aid) if isinstance(r, LLM) else r for name, r in resources.resources.items()}
    return resources.model_copy(update={"resources": attributed})


class Runner:
    """Runs ``agent`` on rollouts from ``store`` until stopped.

    For each rollout: fetch the resources version it names (or the latest), make its attempt active
    in the tracer, call the agent (sync agents in a thread), record what went wrong as an exception
    span, emit the returned reward, wait for the attempt's spans to be written, and end the attempt
    ``succeeded``, ``failed`` or ``timeout``. Heartbeats keep every running attempt alive; an attempt
    the store gave up on (unresponsive, cancelled) has its agent cancelled.

    ``max_concurrency`` rollouts run at once (default: 256 for async agents, 1 for sync ones, each in its
    own thread). Every attempt gets a heartbeat each ``heartbeat_interval`` seconds, or more often where
    its rollout's ``unresponsive_seconds`` needs it. The free slots ask the store for work together, in one call
    that waits up to ``poll_interval`` seconds while the queue is empty (a queued rollout starts at once) and is
    then made again; a stop is noticed within that time.
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
        if not poll_interval > 0 or poll_interval == math.inf:
            raise ValueError(f"poll_interval is a positive number of seconds (got {poll_interval!r}).")
        self.poll_interval = poll_interval
        self._tracer = tracer
        self._own_tracer = tracer is None
        self._resources: dict[str, Resources] = {}
        self._running: dict[str, tuple[AttemptedRollout, asyncio.Task[None]]] = {}
        self._agents: dict[str, asyncio.Future[Any]] = {}  # attempt id -> its agent call, while it runs
        self._ended_by_store: dict[str, AttemptStatus] = {}  # attempt id -> how the store ended it under its agent
        self._alive: dict[str, float] = {}  # attempt id -> when the store last heard of it (event loop clock)
        self._next_heartbeat = 0.0
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
        loop = asyncio.get_running_loop()
        heartbeat_due = asyncio.Event()
        heartbeats = asyncio.create_task(self._heartbeats(heartbeat_due))
        started = 0
        idle_since = time.monotonic()
        try:
            while not stop.is_set() and (max_rollouts is None or started < max_rollouts):
                # Every free slot asks in one store call, which waits while the queue is empty: a burst of enqueued
                # rollouts starts together, as soon as it is queued.
                await slots.acquire()
                taking = 1
                while not slots.locked() and (max_rollouts is None or started + taking < max_rollouts):
                    await slots.acquire()  # a free slot: returns at once
                    taking += 1
                got = [] if stop.is_set() else await self._dequeue(taking, stop)
                for _ in range(taking - len(got)):
                    slots.release()
                if not got:
                    if idle_timeout is not None and not self._running and time.monotonic() - idle_since > idle_timeout:
                        break
                    continue
                idle_since = time.monotonic()
                for rollout in got:
                    started += 1
                    task = asyncio.create_task(self._run_one(rollout, slots))
                    self._running[rollout.attempt.attempt_id] = (rollout, task)
                    self._alive[rollout.attempt.attempt_id] = now = loop.time()  # the dequeue told the store
                    if now + self._beat_every(rollout) < self._next_heartbeat:
                        heartbeat_due.set()
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

    async def _dequeue(self, limit: int, stop: asyncio.Event) -> list[AttemptedRollout]:
        try:
            return await self.store.dequeue_many_rollouts(limit, worker_id=self.worker_id, wait=self.poll_interval)
        except StoreError as exc:
            log.warning("Runner %s could not dequeue (%s); retrying", self.worker_id, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_interval)
            return []

    async def _resources_for(self, rollout: AttemptedRollout) -> Resources:
        if rollout.resources_id is None:
            resources = await self.store.get_latest_resources() or _EMPTY
        else:
            cached = self._resources.get(rollout.resources_id)
            if cached is None:
                cached = await self.store.get_resources_by_id(rollout.resources_id)
                self._resources[rollout.resources_id] = cached
            resources = cached
        return _attributed(resources, rollout)

    async def _call_agent(self, rollout: AttemptedRollout, resources: Resources) -> Any:
        if self.agent.is_async:
            return await self.agent.rollout(rollout.input, resources, rollout)  # type: ignore[misc]
        # Each sync rollout gets a thread of its own: a pool would cap how many run at once (the default
        # one at cpu_count + 4), and a hung agent, which nothing can stop, would keep a pool thread and
        # hold up the process's exit.
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        context = contextvars.copy_context()  # what the agent records belongs to this rollout

        def work() -> None:
            result, error = None, None
            try:
                result = context.run(self.agent.rollout, rollout.input, resources, rollout)
            except Exception as exc:
                error = exc
            except BaseException as exc:  # SystemExit and the like end this agent, not the runner
                error = RuntimeError(f"The agent raised {type(exc).__name__}: {exc}")
            try:
                loop.call_soon_threadsafe(_settle, done, result, error)
            except RuntimeError:  # the runner's event loop is gone
                pass

        threading.Thread(target=work, name=f"agentlightning-agent-{rollout.rollout_id}", daemon=True).start()
        return await done

    async def _run_one(self, rollout: AttemptedRollout, slots: asyncio.Semaphore) -> None:
        rid, aid = rollout.rollout_id, rollout.attempt.attempt_id
        status = AttemptStatus.FAILED
        try:
            async with self.tracer.trace(rid, aid, f"agentlightning.rollout {self.agent.name}"):
                try:
                    resources = await self._resources_for(rollout) if self.agent.uses_resources else _EMPTY
                    await self.store.update_attempt(rid, aid, status=AttemptStatus.RUNNING)
                    timeout = rollout.config.timeout_seconds
                    agent = self._agents[aid] = asyncio.ensure_future(self._call_agent(rollout, resources))
                    try:
                        result = await asyncio.wait_for(agent, timeout)
                    except TimeoutError:
                        if not agent.cancelled():  # the agent's own TimeoutError, not the rollout's timeout
                            raise
                        raise _timed_out(rollout) from None
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
                    ended = self._ended_by_store.get(aid)
                    if ended == AttemptStatus.TIMEOUT:  # the store's clock for the timeout ran out first
                        emit_exception(_timed_out(rollout))
                        status = AttemptStatus.TIMEOUT
                    else:
                        why = "the runner stopped" if ended is None else f"the store ended it as {ended.value!r}"
                        emit_exception(asyncio.CancelledError(f"The attempt was cancelled ({why})."))
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
            self._agents.pop(aid, None)
            self._ended_by_store.pop(aid, None)
            self._alive.pop(aid, None)
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

    def _beat_every(self, rollout: AttemptedRollout) -> float:
        """Seconds between an attempt's heartbeats: ``heartbeat_interval``, or less if its rollout needs it."""
        window = rollout.config.unresponsive_seconds
        return self.heartbeat_interval if window is None else min(self.heartbeat_interval, window / 3)

    async def _heartbeats(self, due: asyncio.Event) -> None:
        """Send each running attempt's heartbeats when they are due; ``due`` wakes it for a new attempt."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            beating: list[AttemptedRollout] = []
            self._next_heartbeat = now + self.heartbeat_interval
            for aid, (rollout, _) in list(self._running.items()):
                every = self._beat_every(rollout)
                at = self._alive.get(aid, now) + every
                if at - every / 2 <= now:  # due, or soon: beat now, sharing this wake-up with the others
                    beating.append(rollout)
                    self._alive[aid] = now
                    at = now + every
                self._next_heartbeat = min(self._next_heartbeat, at)
            due.clear()
            if beating:
                await asyncio.gather(*(self._heartbeat(rollout) for rollout in beating))
            try:
                await asyncio.wait_for(due.wait(), max(0.0, self._next_heartbeat - loop.time()))
            except TimeoutError:
                pass

    async def _heartbeat(self, rollout: AttemptedRollout) -> None:
        rid, aid = rollout.rollout_id, rollout.attempt.attempt_id
        try:
            attempt = await self.store.heartbeat(rid, aid)
        except StoreError as exc:
            log.warning("Heartbeat for rollout %s failed: %s", rid, exc)
            return
        agent = self._agents.get(aid)
        if attempt.is_finished and agent is not None and not agent.done():
            log.warning(
                "The store ended rollout %s attempt %s as %s; cancelling its agent.", rid, aid, attempt.status.value
            )
            self._ended_by_store[aid] = attempt.status
            agent.cancel()
