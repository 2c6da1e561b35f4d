"""The spans the tracer writes, as records and as the store's JSON.

Emitters and integrations record a :class:`SpanRecord` on the agent's thread; OpenTelemetry spans arrive as
:class:`_OtelRecord`. The tracer's writer turns each into an :class:`~agentlightning.store.base.EncodedSpan`: a record
whose fields are plainly what a :class:`~agentlightning.Span` accepts gets its JSON put together around one call of
orjson's JSON writer (:func:`_plain_record`); anything else goes through the ``Span`` model (:func:`_encoded`), which
decides whether it is valid. Either way the stored JSON reads back as the same ``Span``.

:func:`attribute_text` is how integrations write messages, tools and results as span attributes.
"""

from __future__ import annotations

import functools
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import pydantic_core

from agentlightning.store.base import EncodedSpan
from agentlightning.types import Span, SpanKind, StatusCode

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

__all__ = ["SpanRecord", "attribute_text"]

_new_tuple = tuple.__new__
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


def _jsonable(value: Any) -> Any:
    return pydantic_core.to_jsonable_python(value, fallback=str)


def attribute_text(value: Any) -> str:
    """``value`` as a span attribute's text: a ``str`` as it is, anything else as JSON. Objects JSON has no form for
    are written as pydantic writes them (models, dataclasses, dates, sets…), else as their ``str``.

    orjson writes it (a third of what pydantic's writer takes; integrations call this several times per LLM call);
    what orjson refuses (an int beyond 64 bits, a lone surrogate, nesting deeper than 254) pydantic writes."""
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value, default=_jsonable, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        return pydantic_core.to_json(value, fallback=str).decode()


def _hex_id(bits: int) -> str:
    return f"{random.getrandbits(bits):0{bits // 4}x}"


def _otel_attributes(attributes: Any) -> dict[str, Any]:
    # OpenTelemetry keeps sequences as tuples; a Span holds lists.
    return {k: list(v) if isinstance(v, tuple) else v for k, v in (attributes or {}).items()}


# Enums as their values: the Span model's JSON writer takes a few µs per enum member it meets.
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


_HEX = re.compile(r"[0-9a-f]*").fullmatch
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


def _valid_ids(trace_id: object, span_id: object, parent_id: object = None) -> bool:
    """A trace id of 32 and span ids of 16 lowercase hex digits (``parent_id`` may be ``None``): lengths checked,
    the digits in one match (a regular expression's call costs more than its match; this runs for every span)."""
    if type(trace_id) is not str or type(span_id) is not str or len(trace_id) != 32 or len(span_id) != 16:
        return False
    if parent_id is None:
        return _HEX(trace_id + span_id) is not None
    return type(parent_id) is str and len(parent_id) == 16 and _HEX(trace_id + span_id + parent_id) is not None


def _time(value: object) -> bool:
    return type(value) in _NUMBERS and 0 <= value <= 1e11  # type: ignore[operator]  # (NaN fails the comparison)


_finite = math.isfinite
_is_float = float.__instancecheck__  # (the types are exact by then: no subclasses)
_is_list = list.__instancecheck__
_SCALARS = frozenset((str, bool, int))
_ALLOWED = frozenset((str, bool, int, float, list))
_all_scalars = _SCALARS.issuperset


def _plain_attributes(attributes: object) -> bool:
    """A dict whose values are ``str``, ``bool``, ``int`` or finite ``float``, or a list of one of them.

    Its keys are left to orjson, which writes every dict checked here next: it refuses any key whose type is not
    exactly ``str`` (the check this would make), and a refused span goes to the ``Span`` model."""
    if type(attributes) is not dict:
        return False
    # The types of all values in one pass in C without building a set (most attributes are text and numbers: done
    # there); else only the floats and the lists are looked at, picked out in C too. This runs for every span written.
    values = attributes.values()
    if _all_scalars(map(type, values)):
        return True
    kinds = set(map(type, values))
    if not kinds <= _ALLOWED:
        return False
    if float in kinds and not all(map(_finite, filter(_is_float, values))):
        return False
    if list in kinds:
        for value in filter(_is_list, values):
            if value:
                types = set(map(type, value))
                if len(types) != 1 or not types <= _PLAIN or (float in types and not all(map(_finite, value))):
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
    project records always are), but for the keys of its dicts, which orjson checks as it writes them. ``False``
    means only "let pydantic judge"."""
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
        and _valid_ids(fields["trace_id"], fields["span_id"], parent_id)
        and _plain_attributes(fields["attributes"])
        and _plain_attributes(fields["resource"])
        and (not events or _plain_events(events))
        and (
            not links
            or all(
                type(link) is dict
                and link.keys() == _LINK_KEYS
                and _valid_ids(link["trace_id"], link["span_id"])
                and _plain_attributes(link["attributes"])
                for link in links
            )
        )
    )


def _encoded(fields: dict[str, Any]) -> EncodedSpan:
    """The span ``fields`` describe, as the store's JSON. Fields that are plainly valid are written as they are
    with orjson and no model (several times cheaper than making and serialising a ``Span``; the JSON reads back as
    the same ``Span``); any others go through the ``Span`` model, which decides.

    Raises:
        ValidationError: the fields are not a valid span.
    """
    if _plainly_valid(fields):
        try:
            text = orjson.dumps(fields).decode()
            return EncodedSpan(fields["rollout_id"], fields["attempt_id"], fields["span_id"], text)
        except orjson.JSONEncodeError:  # an int beyond 64 bits, a lone surrogate in a str: the model decides
            pass
    return EncodedSpan.of(Span.model_validate(fields))


# What recurs from span to span, its JSON made once: names, and how an attempt's spans begin. Plain dicts, emptied
# when full: a lookup costs a fraction of an lru_cache call, and this runs for every span written.
_CACHED = 1024
_K = TypeVar("_K")
_V = TypeVar("_V")
_NAME_JSON: dict[str, str] = {}
_ATTEMPT_JSON: dict[tuple[str, str], str | None] = {}


def _remember(cache: dict[_K, _V], key: _K, value: _V) -> _V:
    if len(cache) >= _CACHED:
        cache.clear()
    cache[key] = value
    return value


def _name_json(name: str) -> str:
    return _remember(_NAME_JSON, name, orjson.dumps(name).decode())


def _attempt_json(rollout_id: str, attempt_id: str) -> str | None:
    """How the JSON of every span of this attempt begins, up to its trace id; ``None`` where an id is not what a
    ``Span`` accepts. A tracer writes the spans of a few attempts at a time."""
    begins = None
    if _valid_id(rollout_id) and _valid_id(attempt_id):
        rollout_json, attempt_json = orjson.dumps(rollout_id).decode(), orjson.dumps(attempt_id).decode()
        begins = f'{{"rollout_id":{rollout_json},"attempt_id":{attempt_json},"trace_id":"'
    return _remember(_ATTEMPT_JSON, (rollout_id, attempt_id), begins)


# A record's kind (member or value) as the JSON between the span's name and its times; its status as the JSON
# between its attributes and its description (with no events: a record with some has them put in).
_KIND_JSON = {key: f',"kind":"{kind.value}",' for kind in SpanKind for key in (kind, kind.value)}
_NO_EVENTS = ',"events":[]'
_STATUS_JSON = {
    key: f'{_NO_EVENTS},"links":[],"status":{{"status_code":"{code.value}","description":'
    for code in StatusCode
    for key in (code, code.value)
}


def _plain_record(record: SpanRecord) -> EncodedSpan | None:
    """A record as the store's JSON, written by hand when its fields are plainly valid (the checks of
    :func:`_plainly_valid`, on the record itself); ``None`` for any other, which the ``Span`` model judges.

    The record's own parts are put around one call of orjson's JSON writer for its times and attributes (a third
    of what pydantic's takes): a fraction of the cost of building the fields' dict and writing it whole, for every
    span the integrations and emitters record. The JSON reads back as the same ``Span`` (the tests compare both ways).
    """
    rollout_id, attempt_id, trace_id, span_id, start, end, parent_id, description, events = (
        record.rollout_id,
        record.attempt_id,
        record.trace_id,
        record.span_id,
        record.start_time,
        record.end_time,
        record.parent_id,
        record.description,
        record.events,
    )
    begins = None
    if type(rollout_id) is str and type(attempt_id) is str:
        begins = _ATTEMPT_JSON.get((rollout_id, attempt_id)) or _attempt_json(rollout_id, attempt_id)
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
        and _valid_ids(trace_id, span_id, parent_id)
        and _plain_attributes(record.attributes)
        and (not events or _plain_events(events))
    ):
        return None
    try:
        # One call of the JSON writer for the times and the attributes (it writes floats several times faster
        # than repr), as the keys and values they are in the span's JSON: its braces cut off, it goes in whole.
        written = orjson.dumps({"start_time": start, "end_time": end, "attributes": record.attributes}).decode()
        if events:
            status = f',"events":{orjson.dumps(events).decode()}{status[len(_NO_EVENTS) :]}'
        # One join: the pieces are copied once (an LLM call's attributes run to kilobytes).
        text = "".join(
            (
                begins,
                trace_id,
                '","span_id":"',
                span_id,
                '","parent_id":null,"name":' if parent_id is None else f'","parent_id":"{parent_id}","name":',
                _NAME_JSON.get(record.name) or _name_json(record.name),
                kind,
                written[1:-1],
                status,
                "null" if description is None else orjson.dumps(description).decode(),
                '},"resource":{}}',
            )
        )
    except orjson.JSONEncodeError:  # an int beyond 64 bits, a lone surrogate in a str: the Span model decides
        return None
    return _new_tuple(EncodedSpan, (rollout_id, attempt_id, span_id, text))  # (without the named tuple's __new__)
