"""The tracer: records spans of the active rollout and writes them to the store in batches, off the agent's thread.

Two ways in, one queue:
- the project's emitters (``agl.emit_reward`` and friends) append a small record (about 1 µs);
- any OpenTelemetry instrumentation's spans reach the store through :class:`_StoreSpanProcessor`,
  which this tracer installs on the global OpenTelemetry tracer provider.

A writer thread drains the queue every ``flush_interval`` seconds (0.5 s; or sooner when ``batch_size``
records wait, or a flush asks), turns records into the store's JSON and calls ``add_encoded_spans``. A record whose fields are
plainly what a :class:`~agentlightning.Span` accepts (the integrations' and emitters' records) is checked and
its JSON put together around one call of pydantic's JSON writer (:func:`_plain_record`); any other goes through the
pydantic model, which decides whether it is valid. Either way the stored JSON reads back as the same ``Span``.
A batch the store refuses is retried, then split per attempt; only what still fails is dropped, and
every dropped span is logged and counted per attempt (the runner records the count on the attempt,
and ``StoreStatistics.spans_dropped`` adds them up). Nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import random
import re
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pydantic_core
from pydantic import ValidationError

from agentlightning import semconv
from agentlightning._background import guard_background_loop
from agentlightning.errors import StoreError, StoreUnavailable
from agentlightning.store.base import EncodedSpan
from agentlightning.tracer._context import ACTIVE, ActiveRollout
from agentlightning.types import Span, SpanKind, StatusCode

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import Tracer as OtelTracer

    from agentlightning.store.base import LightningStore

__all__ = ["Tracer", "SpanRecord"]

log = logging.getLogger("agentlightning.tracer")

_KINDS = {0: SpanKind.INTERNAL, 1: SpanKind.SERVER, 2: SpanKind.CLIENT, 3: SpanKind.PRODUCER, 4: SpanKind.CONSUMER}
_STATUS = {0: StatusCode.UNSET, 1: StatusCode.OK, 2: StatusCode.ERROR}


@dataclass(slots=True)
class SpanRecord:
    """A span as the emitters record it: cheap to make on the agent's thread, validated by the writer."""

    rollout_id: str
    attempt_id: str
    name: str
    attributes: dict[str, Any]
    start_time: float
    end_time: float
    trace_id: str
    span_id: str
    parent_id: str | None
    status: StatusCode = StatusCode.UNSET
    description: str | None = None
    # A tuple when empty (most records): nothing more for the garbage collector to track while records wait.
    events: Sequence[dict[str, Any]] = ()
    kind: SpanKind = SpanKind.INTERNAL


@dataclass(slots=True)
class _OtelRecord:
    rollout_id: str
    attempt_id: str
    span: ReadableSpan


class _FlushMarker:
    __slots__ = ("future", "loop")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[None] = self.loop.create_future()


def _hex_id(bits: int) -> str:
    return f"{random.getrandbits(bits):0{bits // 4}x}"


def _otel_attributes(attributes: Any) -> dict[str, Any]:
    # OpenTelemetry keeps sequences as tuples; a Span holds lists.
    return {k: list(v) if isinstance(v, tuple) else v for k, v in (attributes or {}).items()}


# Enums as their values: pydantic's JSON writer takes a few µs per enum member it meets.
_VALUES: dict[Any, str] = {member: member.value for member in (*SpanKind, *StatusCode)}


def _record_fields(record: SpanRecord) -> dict[str, Any]:
    """An emitter's or integration's record as the fields of a :class:`~agentlightning.Span`."""
    return {
        "rollout_id": record.rollout_id,
        "attempt_id": record.attempt_id,
        "trace_id": record.trace_id,
        "span_id": record.span_id,
        "parent_id": record.parent_id,
        "name": record.name,
        "kind": _VALUES.get(record.kind, record.kind),
        "start_time": record.start_time,
        "end_time": record.end_time,
        "attributes": record.attributes,
        "events": list(record.events),
        "links": [],
        "status": {"status_code": _VALUES.get(record.status, record.status), "description": record.description},
        "resource": {},
    }


def _otel_fields(record: _OtelRecord) -> dict[str, Any]:
    """An OpenTelemetry span as the fields of a :class:`~agentlightning.Span`."""
    otel = record.span
    context = otel.context
    parent = otel.parent
    status = otel.status
    return {
        "rollout_id": record.rollout_id,
        "attempt_id": record.attempt_id,
        "trace_id": f"{context.trace_id:032x}" if context else _hex_id(128),
        "span_id": f"{context.span_id:016x}" if context else _hex_id(64),
        "parent_id": f"{parent.span_id:016x}" if parent is not None else None,
        "name": otel.name,
        "kind": _KINDS.get(otel.kind.value, SpanKind.INTERNAL).value,
        "start_time": (otel.start_time or 0) / 1e9,
        "end_time": (otel.end_time or otel.start_time or 0) / 1e9,
        "attributes": _otel_attributes(otel.attributes),
        "events": [
            {"name": e.name, "timestamp": e.timestamp / 1e9, "attributes": _otel_attributes(e.attributes)}
            for e in otel.events
        ],
        "links": [
            {
                "trace_id": f"{ln.context.trace_id:032x}",
                "span_id": f"{ln.context.span_id:016x}",
                "attributes": _otel_attributes(ln.attributes),
            }
            for ln in otel.links
        ],
        "status": {
            "status_code": _STATUS.get(status.status_code.value, StatusCode.UNSET).value,
            "description": status.description,
        },
        "resource": _otel_attributes(otel.resource.attributes),
    }


_HEX32 = re.compile(r"[0-9a-f]{32}").fullmatch
_HEX16 = re.compile(r"[0-9a-f]{16}").fullmatch
_PRINTABLE_ID = re.compile(r"[\x21-\x7e]{1,256}").fullmatch  # what Span requires of rollout and attempt ids
_PLAIN = frozenset((str, bool, int, float))
_NUMBERS = frozenset((float, int))
# The enums' members and their values (a str enum's member hashes by its name, not as its value).
_KIND_VALUES = frozenset([*SpanKind, *(kind.value for kind in SpanKind)])
_STATUS_VALUES = frozenset([*StatusCode, *(code.value for code in StatusCode)])
_EVENT_KEYS = frozenset(("name", "timestamp", "attributes"))
_LINK_KEYS = frozenset(("trace_id", "span_id", "attributes"))


@functools.lru_cache(maxsize=1024)
def _valid_id(value: object) -> bool:
    # A tracer sees the same few ids again and again.
    return isinstance(value, str) and _PRINTABLE_ID(value) is not None


def _time(value: object) -> bool:
    return type(value) in _NUMBERS and 0 <= value <= 1e11  # type: ignore[operator]  # (NaN fails the comparison)


_STR = frozenset((str,))
_SCALARS = frozenset((str, bool, int))
_ALLOWED = frozenset((str, bool, int, float, list))


def _plain_attributes(attributes: object) -> bool:
    """A dict whose keys are ``str`` and values ``str``, ``bool``, ``int`` or finite ``float``, or a list of one of
    them."""
    if type(attributes) is not dict:
        return False
    # The types of all keys and all values, each in one pass in C; only floats and lists are then looked at one by
    # one (this runs for every span written, and most attributes are text and numbers).
    kinds = set(map(type, attributes.values()))
    if kinds <= _SCALARS:
        return not attributes or set(map(type, attributes)) <= _STR
    if not kinds <= _ALLOWED or not set(map(type, attributes)) <= _STR:
        return False
    for value in attributes.values():
        kind = type(value)
        if kind is float:
            if value - value != 0.0:  # NaN or infinite
                return False
        elif kind is list and value:
            first = type(value[0])
            if first not in _PLAIN or any(type(v) is not first for v in value):
                return False
            if first is float and any(v - v != 0.0 for v in value):
                return False
    return True


def _plain_events(events: Any) -> bool:
    return all(
        type(event) is dict
        and event.keys() == _EVENT_KEYS
        and type(event["name"]) is str
        and _time(event["timestamp"])
        and _plain_attributes(event["attributes"])
        for event in events
    )


def _plainly_valid(fields: dict[str, Any]) -> bool:
    """Whether ``fields`` are plainly what :class:`~agentlightning.Span` accepts, checked directly (the spans the
    project records always are). ``False`` means only "let pydantic judge"."""
    parent_id, status, events, links = fields["parent_id"], fields["status"], fields["events"], fields["links"]
    return bool(
        type(fields["name"]) is str
        and _time(fields["start_time"])
        and _time(fields["end_time"])
        and fields["kind"] in _KIND_VALUES
        and status["status_code"] in _STATUS_VALUES
        and (status["description"] is None or type(status["description"]) is str)
        and _valid_id(fields["rollout_id"])
        and _valid_id(fields["attempt_id"])
        and _HEX32(fields["trace_id"])
        and _HEX16(fields["span_id"])
        and (parent_id is None or _HEX16(parent_id))
        and _plain_attributes(fields["attributes"])
        and _plain_attributes(fields["resource"])
        and (not events or _plain_events(events))
        and (
            not links
            or all(
                type(link) is dict
                and link.keys() == _LINK_KEYS
                and _HEX32(link["trace_id"])
                and _HEX16(link["span_id"])
                and _plain_attributes(link["attributes"])
                for link in links
            )
        )
    )


def _encoded(fields: dict[str, Any]) -> EncodedSpan:
    """The span ``fields`` describe, as the store's JSON. Fields that are plainly valid are written as they are
    with pydantic's JSON writer and no model (several times cheaper than making and serialising a ``Span``; the
    JSON reads back as the same ``Span``); any others go through the ``Span`` model, which decides.

    Raises:
        ValidationError: the fields are not a valid span.
    """
    if _plainly_valid(fields):
        try:
            text = pydantic_core.to_json(fields).decode()
            return EncodedSpan(fields["rollout_id"], fields["attempt_id"], fields["span_id"], text)
        except (pydantic_core.PydanticSerializationError, UnicodeDecodeError):  # say, a lone surrogate in a str
            pass
    return EncodedSpan.of(Span.model_validate(fields))


@functools.lru_cache(maxsize=1024)
def _json_text(value: str) -> str:
    # Span names recur: each is written as JSON once.
    return pydantic_core.to_json(value).decode()


@functools.lru_cache(maxsize=1024)
def _attempt_json(rollout_id: str, attempt_id: str) -> str | None:
    """How the JSON of every span of this attempt begins, up to its trace id; ``None`` where an id is not what a
    ``Span`` accepts. A tracer writes the spans of a few attempts at a time."""
    if not (_PRINTABLE_ID(rollout_id) and _PRINTABLE_ID(attempt_id)):
        return None
    return f'{{"rollout_id":{_json_text(rollout_id)},"attempt_id":{_json_text(attempt_id)},"trace_id":"'


# A record's kind (member or value) as the JSON between the span's name and its start time; its status as the JSON
# between its attributes and its description (with no events: a record with some has them put in).
_KIND_JSON = {key: f',"kind":"{kind.value}","start_time":' for kind in SpanKind for key in (kind, kind.value)}
_NO_EVENTS = ',"events":[]'
_STATUS_JSON = {
    key: f'{_NO_EVENTS},"links":[],"status":{{"status_code":"{code.value}","description":'
    for code in StatusCode
    for key in (code, code.value)
}


def _plain_record(record: SpanRecord) -> EncodedSpan | None:
    """A record as the store's JSON, written by hand when its fields are plainly valid (the checks of
    :func:`_plainly_valid`, on the record itself); ``None`` for any other, which the ``Span`` model judges.

    The record's own parts are put around one call of pydantic's JSON writer for its times and attributes: a
    fraction of the cost of building the fields' dict and writing it whole, for every span the integrations and
    emitters record. The JSON reads back as the same ``Span`` (the tests compare both ways).
    """
    rollout_id, attempt_id, start, end, parent_id, description, events = (
        record.rollout_id,
        record.attempt_id,
        record.start_time,
        record.end_time,
        record.parent_id,
        record.description,
        record.events,
    )
    begins = _attempt_json(rollout_id, attempt_id) if type(rollout_id) is str and type(attempt_id) is str else None
    kind = _KIND_JSON.get(record.kind)
    status = _STATUS_JSON.get(record.status)
    if not (
        begins is not None
        and kind is not None
        and status is not None
        and type(record.name) is str
        and type(start) in _NUMBERS
        and 0 <= start <= 1e11  # (NaN fails the comparison)
        and type(end) in _NUMBERS
        and 0 <= end <= 1e11
        and (description is None or type(description) is str)
        and _HEX32(record.trace_id)
        and _HEX16(record.span_id)
        and (parent_id is None or _HEX16(parent_id))
        and _plain_attributes(record.attributes)
        and (not events or _plain_events(events))
    ):
        return None
    try:
        # One call of the JSON writer for the times and the attributes (it writes floats several times faster
        # than repr); neither a number nor the start of an object holds a comma, so the first two split them.
        written = pydantic_core.to_json((start, end, record.attributes)).decode()
        first = written.index(",")
        second = written.index(",", first + 1)
        if events:
            status = f',"events":{pydantic_core.to_json(list(events)).decode()}{status[len(_NO_EVENTS) :]}'
        # One join: the pieces are copied once (an LLM call's attributes run to kilobytes).
        text = "".join(
            (
                begins,
                record.trace_id,
                '","span_id":"',
                record.span_id,
                '","parent_id":null,"name":' if parent_id is None else f'","parent_id":"{parent_id}","name":',
                _json_text(record.name),
                kind,
                written[1:first],
                ',"end_time":',
                written[first + 1 : second],
                ',"attributes":',
                written[second + 1 : -1],
                status,
                "null" if description is None else pydantic_core.to_json(description).decode(),
                '},"resource":{}}',
            )
        )
    except (pydantic_core.PydanticSerializationError, UnicodeDecodeError):  # say, a lone surrogate in a str
        return None
    return EncodedSpan(rollout_id, attempt_id, record.span_id, text)


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
