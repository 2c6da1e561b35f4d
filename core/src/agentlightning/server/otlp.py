"""OTLP/HTTP trace ingest: agents in any language can report spans with a standard OpenTelemetry exporter.

Each span must say which rollout and attempt it belongs to, with the attributes
``agentlightning.rollout.id`` and ``agentlightning.attempt.id`` on the span or on its resource.
Spans without them, or naming an unknown attempt, are rejected and counted in the response's
``partial_success``, as the OTLP specification asks. Bodies may be gzip- or deflate-compressed
(``OTEL_EXPORTER_OTLP_COMPRESSION``).
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from agentlightning import semconv
from agentlightning.errors import StoreError
from agentlightning.store.base import LightningStore
from agentlightning.types import Span, SpanKind, StatusCode

log = logging.getLogger("agentlightning.server")

_KINDS = {
    0: SpanKind.INTERNAL,
    1: SpanKind.INTERNAL,
    2: SpanKind.SERVER,
    3: SpanKind.CLIENT,
    4: SpanKind.PRODUCER,
    5: SpanKind.CONSUMER,
}
_STATUS = {0: StatusCode.UNSET, 1: StatusCode.OK, 2: StatusCode.ERROR}
_PROTOBUF = "application/x-protobuf"


def _value(any_value: Any) -> Any:
    """An OTLP AnyValue as a span attribute value (primitives, homogeneous lists; the rest as JSON text)."""
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        items = [_value(v) for v in any_value.array_value.values]
        # An empty array is a valid attribute value too (e.g. no stop sequences), not the text "[]".
        if all(type(i) is type(items[0]) and isinstance(i, (str, bool, int, float)) for i in items):
            return items
        return json.dumps(items, default=str)
    if kind == "kvlist_value":
        return json.dumps({kv.key: _value(kv.value) for kv in any_value.kvlist_value.values}, default=str)
    if kind == "bytes_value":
        return any_value.bytes_value.hex()
    return getattr(any_value, kind)


def _attributes(key_values: Any) -> dict[str, Any]:
    result = {}
    for kv in key_values:
        value = _value(kv.value)
        if value is not None:
            result[kv.key] = value
    return result


def parse_request(body: bytes) -> tuple[list[Span], int, list[str]]:
    """Turn an ExportTraceServiceRequest into spans; also returns how many were rejected and why."""
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as exc:
        raise StoreError(f"Body is not an OTLP ExportTraceServiceRequest in protobuf: {exc}") from exc
    spans: list[Span] = []
    rejected = 0
    reasons: list[str] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for otlp in scope_spans.spans:
                attributes = _attributes(otlp.attributes)
                rollout_id = attributes.get(semconv.AGL_ROLLOUT_ID, resource.get(semconv.AGL_ROLLOUT_ID))
                attempt_id = attributes.get(semconv.AGL_ATTEMPT_ID, resource.get(semconv.AGL_ATTEMPT_ID))
                if not rollout_id or not attempt_id:
                    rejected += 1
                    reasons.append(
                        f"span {otlp.name!r} has no {semconv.AGL_ROLLOUT_ID} / {semconv.AGL_ATTEMPT_ID} attribute"
                    )
                    continue
                try:
                    spans.append(
                        Span(
                            rollout_id=rollout_id,
                            attempt_id=attempt_id,
                            trace_id=otlp.trace_id.hex(),
                            span_id=otlp.span_id.hex(),
                            parent_id=otlp.parent_span_id.hex() or None,
                            name=otlp.name,
                            kind=_KINDS.get(otlp.kind, SpanKind.INTERNAL),
                            start_time=otlp.start_time_unix_nano / 1e9,
                            end_time=(otlp.end_time_unix_nano / 1e9) or None,
                            attributes=attributes,
                            events=[
                                {
                                    "name": e.name,
                                    "timestamp": e.time_unix_nano / 1e9,
                                    "attributes": _attributes(e.attributes),
                                }
                                for e in otlp.events
                            ],
                            links=[
                                {
                                    "trace_id": ln.trace_id.hex(),
                                    "span_id": ln.span_id.hex(),
                                    "attributes": _attributes(ln.attributes),
                                }
                                for ln in otlp.links
                            ],
                            status={
                                "status_code": _STATUS.get(otlp.status.code, StatusCode.UNSET),
                                "description": otlp.status.message or None,
                            },
                            resource=resource,
                        )
                    )
                except ValidationError as exc:
                    rejected += 1
                    reasons.append(f"span {otlp.name!r} is malformed: {exc.errors(include_url=False)[0]['msg']}")
    return spans, rejected, reasons


def _export_response(rejected: int, reasons: list[str]) -> Response:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = "; ".join(reasons[:20])
    return Response(response.SerializeToString(), media_type=_PROTOBUF)


class _TooLarge(Exception):
    """A compressed body that inflates past the server's body size limit."""


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo the ``Content-Encoding`` OTLP exporters may apply (gzip or deflate), inflating at most ``limit`` bytes.

    Raises :class:`StoreError` for a corrupt body and :class:`_TooLarge` past the limit, so a small
    compressed request cannot make the server allocate without bound.
    """
    error: zlib.error | None = None
    # wbits 32 + 15 reads both the gzip and the zlib header; some "deflate" senders omit the header (raw deflate).
    for wbits in (32 + zlib.MAX_WBITS, -zlib.MAX_WBITS):
        inflater = zlib.decompressobj(wbits)
        try:
            data = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            error = exc
            continue
        if len(data) > limit or inflater.unconsumed_tail:
            raise _TooLarge
        if not inflater.eof:
            raise StoreError(f"Body is truncated {encoding} data.")
        return data
    raise StoreError(f"Body is not valid {encoding} data: {error}")


def otlp_endpoint(store: LightningStore, *, max_body_bytes: int) -> Callable[[Request], Awaitable[Response]]:
    """The ``POST /v1/traces`` handler for ``store``; ``max_body_bytes`` also bounds a decompressed body."""
    from agentlightning.server.app import error_response

    async def endpoint(request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type != _PROTOBUF:
            return error_response(
                415,
                "UnsupportedMediaType",
                f"OTLP ingest takes {_PROTOBUF} bodies (OTLP/HTTP protobuf), not {content_type!r}.",
            )
        body = await request.body()
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        try:
            if encoding in ("gzip", "x-gzip", "deflate"):
                body = _decompress(body, encoding, max_body_bytes)
            elif encoding not in ("", "identity"):
                return error_response(
                    415,
                    "UnsupportedMediaType",
                    f"OTLP ingest takes gzip, deflate or uncompressed bodies, not {encoding!r}.",
                )
            spans, rejected, reasons = parse_request(body)
        except _TooLarge:
            return error_response(
                413,
                "RequestTooLarge",
                f"Decompressed body is larger than the server's limit of {max_body_bytes} bytes; send smaller batches.",
            )
        except StoreError as exc:
            return error_response(400, "StoreRequestError", str(exc))
        # One attempt's spans are stored together: a batch naming an unknown attempt loses only its own spans.
        by_attempt: dict[tuple[str, str], list[Span]] = {}
        for span in spans:
            by_attempt.setdefault((span.rollout_id, span.attempt_id), []).append(span)
        for (rollout_id, attempt_id), group in by_attempt.items():
            try:
                await store.add_many_spans(group)
            except StoreError as exc:
                rejected += len(group)
                reasons.append(f"{len(group)} spans of rollout {rollout_id!r} attempt {attempt_id!r}: {exc}")
        return _export_response(rejected, reasons)

    return endpoint
