"""Spans: OpenTelemetry-shaped records of what happened during an attempt."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

__all__ = ["AttributeValue", "Attributes", "SpanKind", "StatusCode", "SpanStatus", "SpanEvent", "SpanLink", "Span"]

# OpenTelemetry attribute values: a primitive or a homogeneous list of primitives.
AttributeValue = (
    StrictStr
    | StrictBool
    | StrictInt
    | StrictFloat
    | list[StrictStr]
    | list[StrictBool]
    | list[StrictInt]
    | list[StrictFloat]
)
Attributes = dict[str, AttributeValue]

_HexTraceId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
_HexSpanId = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
_Id = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[\x21-\x7e]+$")]
_Time = Annotated[float, Field(ge=0, le=10**11, allow_inf_nan=False)]


class SpanKind(str, Enum):
    """OpenTelemetry span kind."""

    INTERNAL = "internal"
    SERVER = "server"
    CLIENT = "client"
    PRODUCER = "producer"
    CONSUMER = "consumer"


class StatusCode(str, Enum):
    """OpenTelemetry span status code."""

    UNSET = "unset"
    OK = "ok"
    ERROR = "error"


class SpanStatus(BaseModel):
    """Outcome of a span."""

    status_code: StatusCode = StatusCode.UNSET
    description: str | None = None


class SpanEvent(BaseModel):
    """A timestamped event inside a span (an exception, a log line, ...)."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    name: str
    timestamp: _Time
    attributes: Attributes = Field(default_factory=dict)


class SpanLink(BaseModel):
    """A link from a span to another span."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    trace_id: _HexTraceId
    span_id: _HexSpanId
    attributes: Attributes = Field(default_factory=dict)


class Span(BaseModel):
    """One OpenTelemetry span, tagged with the rollout and attempt it belongs to.

    ``sequence_id`` orders the spans of one attempt (1 to 2³² − 1). Leave it ``None`` and the store numbers spans
    in the order it receives them. Times are seconds since the Unix epoch.
    """

    model_config = ConfigDict(ser_json_inf_nan="constants")

    rollout_id: _Id
    attempt_id: _Id
    sequence_id: Annotated[int, Field(ge=1, le=2**32 - 1)] | None = None
    trace_id: _HexTraceId
    span_id: _HexSpanId
    parent_id: _HexSpanId | None = None
    name: str
    kind: SpanKind = SpanKind.INTERNAL
    start_time: _Time
    end_time: _Time | None = None
    attributes: Attributes = Field(default_factory=dict)
    events: list[SpanEvent] = Field(default_factory=list)
    links: list[SpanLink] = Field(default_factory=list)
    status: SpanStatus = Field(default_factory=SpanStatus)
    resource: Attributes = Field(default_factory=dict)
