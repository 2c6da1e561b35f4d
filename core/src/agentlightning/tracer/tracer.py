"""The tracer: records spans of the active rollout and writes them to the store in batches, off the agent's thread.

Two ways in, one queue:
- the project's emitters (``agl.emit_reward`` and friends) append a small record (about 1 µs);
- any OpenTelemetry instrumentation's spans reach the store through :class:`_StoreSpanProcessor`,
  which this tracer installs on the global OpenTelemetry tracer provider.

A writer thread drains the queue every ``flush_interval`` seconds (0.5 s; or sooner when ``batch_size``
records wait, or a flush asks), turns records into the store's JSON (see ``_encoding``: checked by hand where
they are plainly valid, by the ``Span`` model otherwise) and calls ``add_encoded_spans``.
A batch the store refuses is retried, then split per attempt; only what still fails is dropped, and
every dropped span is logged and counted per attempt (the runner records the count on the attempt,
and ``StoreStatistics.spans_dropped`` adds them up). Nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from agentlightning import semconv
from agentlightning._background import guard_background_loop
from agentlightning.errors import StoreError, StoreUnavailable
from agentlightning.store.base import EncodedSpan
from agentlightning.tracer._context import ACTIVE, ActiveRollout
from agentlightning.tracer._encoding import (
    SpanRecord,
    _encoded,
    _otel_fields,
    _OtelRecord,
    _plain_record,
    _record_fields,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import Tracer as OtelTracer

    from agentlightning.store.base import LightningStore

__all__ = ["Tracer", "SpanRecord"]

log = logging.getLogger("agentlightning.tracer")


class _FlushMarker:
    __slots__ = ("future", "loop")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[None] = self.loop.create_future()


class _StoreSpanProcessor:
    """Hands every ended OpenTelemetry span that belongs to an active rollout to its tracer."""

    def __init__(self) -> None:
        self._owners: dict[int, ActiveRollout] = {}

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        active = ACTIVE.get()
        if active is not None and span.context is not None:
            self._owners[span.context.span_id] = active

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is None:
            return
        owner = self._owners.pop(span.context.span_id, None)
        if owner is not None:
            owner.tracer._put(_OtelRecord(owner.rollout_id, owner.attempt_id, span))

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def _on_ending(self, span: Any) -> None:  # newer SDKs call this before on_end
        pass


_PROCESSOR: _StoreSpanProcessor | None = None
_TRACER: OtelTracer | None = None
_PROCESSOR_LOCK = threading.Lock()


def otel_tracer() -> OtelTracer:
    """An OpenTelemetry tracer whose spans inside a rollout land in that rollout's store.

    Installs the project's span processor on the global tracer provider (creating an SDK provider
    if the application has none), so spans of any OpenTelemetry instrumentation land there too.
    """
    global _PROCESSOR, _TRACER
    if _TRACER is not None:
        return _TRACER
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    with _PROCESSOR_LOCK:
        if _PROCESSOR is None:
            provider = trace.get_tracer_provider()
            if not isinstance(provider, TracerProvider):
                provider = TracerProvider()
                trace.set_tracer_provider(provider)
                provider = trace.get_tracer_provider()
            if not isinstance(provider, TracerProvider):
                raise RuntimeError(
                    "The global OpenTelemetry tracer provider is not the SDK's; Agent Lightning cannot record its spans."
                )
            _PROCESSOR = _StoreSpanProcessor()
            provider.add_span_processor(_PROCESSOR)  # type: ignore[arg-type]
        _TRACER = trace.get_tracer("agentlightning")
    return _TRACER


class Tracer:
    """Writes the spans of active rollouts to ``store``, batched, from a background thread.

    Use :meth:`trace` (an async context manager) to make an attempt active in the current context;
    everything recorded inside it, in this task and in tasks and threads started from it (see
    ``agl.Thread``), is attributed to that attempt. :meth:`flush` waits until what was recorded so far
    is written (a runner flushes as each rollout ends, so a finished rollout's spans are all in the store).

    The writer wakes every ``flush_interval`` seconds, or as soon as ``batch_size`` records wait or a flush asks.
    Each time it works, it and the store's database thread take the GIL from the agent's thread several times, and
    an asyncio agent (which lets go of the GIL at every turn of its event loop) pays a thread switch for each: with
    the writer waking every 50 ms, the OpenAI Agents SDK's zero-latency runs measured 6–8 % slower over a
    do-nothing processor, against 3.6–4.1 % at 0.5 s (``benchmarks/openai_agents_overhead.py``). So the default
    is 0.5 s: spans of a rollout still running reach the store up to half a second after they end.
    """

    def __init__(self, store: LightningStore, *, batch_size: int = 1024, flush_interval: float = 0.5) -> None:
        self.store = store
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._queue: collections.deque[SpanRecord | _OtelRecord | _FlushMarker] = collections.deque()
        self._wake = threading.Event()
        self._closed = False
        self._dropped: dict[str, int] = {}
        self._dropped_lock = threading.Lock()
        self.spans_written = 0
        self._thread = threading.Thread(target=self._main, name="agentlightning-tracer", daemon=True)
        self._thread.start()

    # --- recording -----------------------------------------------------------------------------
    def _put(self, record: SpanRecord | _OtelRecord | _FlushMarker) -> None:
        self._queue.append(record)
        if len(self._queue) >= self.batch_size or isinstance(record, _FlushMarker):
            self._wake.set()

    def record(self, record: SpanRecord) -> None:
        """Queue one emitter record (any thread)."""
        queue = self._queue
        queue.append(record)
        if len(queue) >= self.batch_size:
            self._wake.set()

    @contextlib.asynccontextmanager
    async def trace(
        self, rollout_id: str, attempt_id: str, name: str = "agentlightning.rollout"
    ) -> AsyncIterator[None]:
        """Make the attempt active here, under a root span ``name`` that every span inside descends from."""
        with self.trace_sync(rollout_id, attempt_id, name):
            yield

    @contextlib.contextmanager
    def trace_sync(self, rollout_id: str, attempt_id: str, name: str = "agentlightning.rollout") -> Iterator[None]:
        """:meth:`trace` for synchronous code."""
        token = ACTIVE.set(ActiveRollout(rollout_id, attempt_id, self))
        try:
            attributes = {semconv.AGL_ROLLOUT_ID: rollout_id, semconv.AGL_ATTEMPT_ID: attempt_id}
            with otel_tracer().start_as_current_span(name, attributes=attributes):
                yield
        finally:
            ACTIVE.reset(token)

    async def flush(self) -> None:
        """Wait until every span recorded before this call has been written (or counted as dropped)."""
        marker = _FlushMarker()
        self._put(marker)
        await marker.future

    def dropped(self, attempt_id: str) -> int:
        """How many spans of this attempt could not be written."""
        with self._dropped_lock:
            return self._dropped.get(attempt_id, 0)

    def forget(self, attempt_id: str) -> None:
        """Drop the bookkeeping of a finished attempt."""
        with self._dropped_lock:
            self._dropped.pop(attempt_id, None)

    def close(self) -> None:
        """Write what is queued, then stop the writer thread."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join()

    # --- the writer thread ----------------------------------------------------------------------
    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        guard_background_loop(loop)
        try:
            while True:
                self._wake.wait(self.flush_interval)
                self._wake.clear()
                # What is queued now, in batches; what arrives meanwhile waits for the next tick (unless a flush
                # or a full batch wakes the writer sooner): a write has a fixed cost (~0.1 ms of this thread's time,
                # as much of the database's), so writing the few records that came in during the last write at
                # once would double the writes for nothing.
                for _ in range(-(-len(self._queue) // self.batch_size)):
                    loop.run_until_complete(self._write_some())
                if self._closed and not self._queue:
                    break
        finally:
            loop.run_until_complete(self._close_store_sessions())
            loop.close()

    async def _close_store_sessions(self) -> None:
        # A store client keeps one HTTP session per event loop; this loop's ends here.
        close_loop = getattr(self.store, "_close_loop_session", None)
        if close_loop is not None:
            await close_loop()

    async def _write_some(self) -> None:
        spans: list[EncodedSpan] = []
        markers: list[_FlushMarker] = []
        queue = self._queue
        # A marker promises only that what came before it is written, so it rides along with the batch:
        # many rollouts finishing together cost one store write, not one each.
        for _ in range(min(len(queue), self.batch_size)):
            item = queue.popleft()
            if isinstance(item, SpanRecord):
                encoded = _plain_record(item)  # (the usual case, tried first)
                if encoded is not None:
                    spans.append(encoded)
                    continue
            elif isinstance(item, _FlushMarker):
                markers.append(item)
                continue
            try:
                spans.append(_encoded(_record_fields(item) if isinstance(item, SpanRecord) else _otel_fields(item)))
            except ValidationError as exc:
                self._drop(item.attempt_id, 1, f"span {getattr(item, 'name', '?')!r} is malformed: {exc}")
        if spans:
            await self._store_spans(spans)
        for marker in markers:
            try:
                marker.loop.call_soon_threadsafe(_resolve, marker.future)
            except RuntimeError:
                pass

    async def _store_spans(self, spans: list[EncodedSpan]) -> None:
        delay = 0.1
        for tries_left in range(4, -1, -1):
            try:
                await self.store.add_encoded_spans(spans)
                self.spans_written += len(spans)
                return
            except StoreUnavailable as exc:  # the store may come back (a client already retried a while)
                error: StoreError = exc
                if not tries_left:
                    break
                await asyncio.sleep(delay)
                delay *= 3
            except StoreError as exc:  # refused: sending it again would be refused again
                error = exc
                break
        # One attempt's bad span must not cost the others theirs: try each attempt alone.
        by_attempt: dict[str, list[EncodedSpan]] = {}
        for span in spans:
            by_attempt.setdefault(span.attempt_id, []).append(span)
        if len(by_attempt) == 1:
            ((attempt_id, group),) = by_attempt.items()
            self._drop(attempt_id, len(group), str(error))
            return
        for attempt_id, group in by_attempt.items():
            try:
                await self.store.add_encoded_spans(group)
                self.spans_written += len(group)
            except StoreError as exc:
                self._drop(attempt_id, len(group), str(exc))

    def _drop(self, attempt_id: str, count: int, reason: str) -> None:
        log.error("Dropped %d span(s) of attempt %s: %s", count, attempt_id, reason)
        with self._dropped_lock:
            self._dropped[attempt_id] = self._dropped.get(attempt_id, 0) + count


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
