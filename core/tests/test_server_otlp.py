"""OTLP ingest (``POST /v1/traces``): real OpenTelemetry exporters report into the store; bad spans are counted.

The tests talk to real servers on 127.0.0.1 (the ``served``, ``served_small`` and ``fuzz_target`` fixtures), shared
by the server tests.
"""

from __future__ import annotations

import gzip
import secrets
import time
import zlib

import httpx
import hypothesis
import hypothesis.strategies as st
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Status
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from pydantic import TypeAdapter
from served_store import API, AUTH, PROTOBUF, SMALL_LIMIT, FuzzTarget, Served, error_of, started_rollout

import agentlightning as agl
from agentlightning import semconv


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _proto_span(name: str, **ids: str) -> ProtoSpan:
    now = time.time_ns()
    return ProtoSpan(
        trace_id=secrets.token_bytes(16),
        span_id=secrets.token_bytes(8),
        name=name,
        start_time_unix_nano=now,
        end_time_unix_nano=now + 1000,
        attributes=[_kv(key, value) for key, value in ids.items()],
    )


def _ids(rollout_id: str, attempt_id: str) -> dict[str, str]:
    return {semconv.AGL_ROLLOUT_ID: rollout_id, semconv.AGL_ATTEMPT_ID: attempt_id}


@pytest.mark.parametrize("processor", ["simple", "batch"])
async def test_a_real_opentelemetry_exporter_reports_spans_into_the_store(served: Served, processor: str) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.trace import SpanKind, Status, StatusCode

    got = await started_rollout(served)
    resource = Resource.create({"service.name": "my-agent", **_ids(got.rollout_id, got.attempt.attempt_id)})
    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(endpoint=f"{served.url}/v1/traces", headers=AUTH, timeout=30)
    provider.add_span_processor(
        SimpleSpanProcessor(exporter) if processor == "simple" else BatchSpanProcessor(exporter)
    )
    tracer = provider.get_tracer("test-agent")

    with tracer.start_as_current_span("invoke_agent", kind=SpanKind.SERVER) as agent:
        agent.set_attribute(semconv.GEN_AI_OPERATION_NAME, semconv.GEN_AI_OPERATION_INVOKE_AGENT)
        with tracer.start_as_current_span("chat", kind=SpanKind.CLIENT) as chat:
            chat.set_attributes(
                {
                    semconv.GEN_AI_REQUEST_MODEL: "m",
                    semconv.GEN_AI_USAGE_INPUT_TOKENS: 12,
                    semconv.GEN_AI_REQUEST_TEMPERATURE: 0.5,
                    "cached": True,
                    semconv.GEN_AI_RESPONSE_FINISH_REASONS: ["stop", "length"],
                    semconv.AGL_PROMPT_TOKEN_IDS: [1, 2, 3],
                    semconv.GEN_AI_REQUEST_STOP_SEQUENCES: [],
                }
            )
            chat.add_event("retry", {"attempt": 2, "reason": "rate limited"})
            chat.set_status(Status(StatusCode.ERROR, "upstream timed out"))
        with tracer.start_as_current_span("tool"):
            pass
    assert provider.force_flush(30_000)
    provider.shutdown()

    spans = await served.store.query_spans(got.rollout_id)
    by_name = {span.name: span for span in spans}
    assert sorted(by_name) == ["chat", "invoke_agent", "tool"] and len(spans) == 3
    agent_span, chat_span, tool_span = by_name["invoke_agent"], by_name["chat"], by_name["tool"]
    assert agent_span.span_id == format(agent.get_span_context().span_id, "016x")
    assert agent_span.trace_id == format(agent.get_span_context().trace_id, "032x")
    assert agent_span.parent_id is None
    assert chat_span.parent_id == tool_span.parent_id == agent_span.span_id
    assert chat_span.span_id == format(chat.get_span_context().span_id, "016x")
    assert {s.trace_id for s in spans} == {agent_span.trace_id}
    assert all(s.rollout_id == got.rollout_id and s.attempt_id == got.attempt.attempt_id for s in spans)
    assert (agent_span.kind, chat_span.kind, tool_span.kind) == (
        agl.SpanKind.SERVER,
        agl.SpanKind.CLIENT,
        agl.SpanKind.INTERNAL,
    )
    assert chat_span.attributes == {
        semconv.GEN_AI_REQUEST_MODEL: "m",
        semconv.GEN_AI_USAGE_INPUT_TOKENS: 12,
        semconv.GEN_AI_REQUEST_TEMPERATURE: 0.5,
        "cached": True,
        semconv.GEN_AI_RESPONSE_FINISH_REASONS: ["stop", "length"],
        semconv.AGL_PROMPT_TOKEN_IDS: [1, 2, 3],
        semconv.GEN_AI_REQUEST_STOP_SEQUENCES: [],
    }
    (event,) = chat_span.events
    assert event.name == "retry" and event.attributes == {"attempt": 2, "reason": "rate limited"}
    assert chat_span.start_time <= event.timestamp <= (chat_span.end_time or 0)
    assert chat_span.status == agl.SpanStatus(status_code=agl.StatusCode.ERROR, description="upstream timed out")
    assert agent_span.status.status_code == agl.StatusCode.UNSET
    assert agent_span.start_time <= chat_span.start_time <= (chat_span.end_time or 0) <= (agent_span.end_time or 0)
    assert agent_span.resource["service.name"] == "my-agent"
    assert agent_span.resource[semconv.AGL_ROLLOUT_ID] == got.rollout_id
    assert sorted(s.sequence_id or 0 for s in spans) == [1, 2, 3]
    # Spans count as a sign of life: the attempt is running now.
    assert (await served.store.query_attempts(got.rollout_id))[0].status == agl.AttemptStatus.RUNNING


async def test_an_exporter_with_a_wrong_token_is_refused(served: Served) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    got = await started_rollout(served)
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(_ids(got.rollout_id, got.attempt.attempt_id)))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("t").start_as_current_span("step"):
        pass
    finished = memory.get_finished_spans()
    wrong = OTLPSpanExporter(endpoint=f"{served.url}/v1/traces", headers={"authorization": "Bearer nope"}, timeout=5)
    assert wrong.export(finished) == SpanExportResult.FAILURE
    assert await served.store.query_spans(got.rollout_id) == []
    right = OTLPSpanExporter(endpoint=f"{served.url}/v1/traces", headers=AUTH, timeout=5)
    assert right.export(finished) == SpanExportResult.SUCCESS
    assert [s.name for s in await served.store.query_spans(got.rollout_id)] == ["step"]
    provider.shutdown()


async def test_otlp_spans_without_ids_or_with_unknown_ones_are_rejected_and_counted(served: Served) -> None:
    got = await started_rollout(served)
    rid, aid = got.rollout_id, got.attempt.attempt_id
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                scope_spans=[
                    ScopeSpans(
                        spans=[
                            _proto_span("kept", **_ids(rid, aid)),
                            _proto_span("no ids"),
                            _proto_span("only rollout", **{semconv.AGL_ROLLOUT_ID: rid}),
                            _proto_span("unknown attempt", **_ids(rid, "at-missing")),
                            _proto_span("bad trace id", **_ids(rid, aid)),
                        ]
                    )
                ]
            ),
            # Ids on the resource apply to every span under it.
            ResourceSpans(
                resource={"attributes": [_kv(k, v) for k, v in _ids(rid, aid).items()]},
                scope_spans=[ScopeSpans(spans=[_proto_span("kept via resource")])],
            ),
        ]
    )
    request.resource_spans[0].scope_spans[0].spans[4].trace_id = b"\x01\x02"
    response = await served.http.post("/v1/traces", content=request.SerializeToString(), headers=PROTOBUF)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    parsed = ExportTraceServiceResponse.FromString(response.content)
    assert parsed.partial_success.rejected_spans == 4
    message = parsed.partial_success.error_message
    for fragment in ("'no ids'", "'only rollout'", "at-missing", "'bad trace id'", semconv.AGL_ROLLOUT_ID):
        assert fragment in message, message
    assert sorted(s.name for s in await served.store.query_spans(rid)) == ["kept", "kept via resource"]

    # A request whose spans are all fine answers with no partial_success at all.
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[_proto_span("more", **_ids(rid, aid))])])]
    )
    response = await served.http.post("/v1/traces", content=request.SerializeToString(), headers=PROTOBUF)
    parsed = ExportTraceServiceResponse.FromString(response.content)
    assert response.status_code == 200 and not parsed.HasField("partial_success")
    # An empty request is fine too.
    response = await served.http.post("/v1/traces", content=b"", headers=PROTOBUF)
    assert response.status_code == 200 and not ExportTraceServiceResponse.FromString(response.content).HasField(
        "partial_success"
    )


async def test_compressed_exports_are_taken(served: Served) -> None:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    got = await started_rollout(served)
    for compression in (Compression.Gzip, Compression.Deflate):
        provider = TracerProvider(resource=Resource.create(_ids(got.rollout_id, got.attempt.attempt_id)))
        exporter = OTLPSpanExporter(
            endpoint=f"{served.url}/v1/traces", headers=AUTH, compression=compression, timeout=30
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer("t").start_as_current_span(f"sent {compression.value}"):
            pass
        provider.shutdown()
    assert [s.name for s in await served.store.query_spans(got.rollout_id)] == ["sent gzip", "sent deflate"]


async def test_compressed_bodies_are_bounded_and_checked(served_small: Served) -> None:
    served = served_small
    bomb = gzip.compress(b"\n\x00" * SMALL_LIMIT)  # small on the wire, twice the limit inflated
    assert len(bomb) < SMALL_LIMIT
    response = await served.http.post("/v1/traces", content=bomb, headers={**PROTOBUF, "content-encoding": "gzip"})
    assert response.status_code == 413 and "Decompressed" in error_of(response)["message"]

    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[_proto_span("x")])])]
    )
    packed = gzip.compress(request.SerializeToString())
    for encoding, body, status in [
        ("gzip", packed[:-6], 400),  # truncated
        ("gzip", b"not gzip", 400),
        ("br", packed, 415),
        ("gzip", packed, 200),
        ("deflate", zlib.compress(request.SerializeToString()), 200),
        ("identity", request.SerializeToString(), 200),
    ]:
        response = await served.http.post(
            "/v1/traces", content=body, headers={**PROTOBUF, "content-encoding": encoding}
        )
        assert response.status_code == status, (encoding, response.text)
        if status >= 400:
            assert error_of(response)["message"]
        else:  # the span has no rollout / attempt ids: decoded, then rejected and counted
            assert ExportTraceServiceResponse.FromString(response.content).partial_success.rejected_spans == 1


ANY_VALUE = st.deferred(
    lambda: st.one_of(
        st.builds(AnyValue, string_value=st.text(max_size=20)),
        st.builds(AnyValue, bool_value=st.booleans()),
        st.builds(AnyValue, int_value=st.integers(-(2**63), 2**63 - 1)),
        st.builds(AnyValue, double_value=st.floats()),
        st.builds(AnyValue, bytes_value=st.binary(max_size=8)),
        st.just(AnyValue()),
        st.lists(ANY_VALUE, max_size=3).map(lambda vs: AnyValue(array_value={"values": vs})),
        st.lists(st.tuples(st.text(max_size=5), ANY_VALUE), max_size=3).map(
            lambda kvs: AnyValue(kvlist_value={"values": [KeyValue(key=k, value=v) for k, v in kvs]})
        ),
    )
)
KEY_VALUES = st.lists(st.builds(KeyValue, key=st.text(max_size=10), value=ANY_VALUE), max_size=4)
NANOS = st.integers(0, 2**64 - 1)
PROTO_SPANS = st.builds(
    ProtoSpan,
    trace_id=st.binary(min_size=16, max_size=16) | st.binary(max_size=20),
    span_id=st.binary(min_size=8, max_size=8) | st.binary(max_size=10),
    parent_span_id=st.just(b"") | st.binary(min_size=8, max_size=8) | st.binary(max_size=10),
    name=st.text(max_size=20),
    kind=st.integers(0, 5),
    start_time_unix_nano=st.integers(0, 2 * 10**18) | NANOS,
    end_time_unix_nano=st.integers(0, 2 * 10**18) | NANOS,
    attributes=KEY_VALUES,
    events=st.lists(
        st.builds(ProtoSpan.Event, time_unix_nano=NANOS, name=st.text(max_size=10), attributes=KEY_VALUES), max_size=2
    ),
    links=st.lists(
        st.builds(
            ProtoSpan.Link, trace_id=st.binary(max_size=16), span_id=st.binary(max_size=8), attributes=KEY_VALUES
        ),
        max_size=2,
    ),
    status=st.builds(Status, code=st.integers(0, 2), message=st.text(max_size=10)),
)


@hypothesis.settings(max_examples=40, deadline=None, derandomize=True, database=None)
@hypothesis.given(spans=st.lists(PROTO_SPANS, max_size=5), on_resource=st.booleans(), known=st.booleans())
def test_arbitrary_otlp_spans_are_stored_or_counted_as_rejected(
    fuzz_target: FuzzTarget, spans: list[ProtoSpan], on_resource: bool, known: bool
) -> None:
    rollout_id, attempt_id = fuzz_target.otlp_ids
    if not known:
        attempt_id = "at-missing"
    ids = [_kv(k, v) for k, v in _ids(rollout_id, attempt_id).items()]
    for span in spans:
        if len(span.span_id) == 8:  # a fresh id, so the span is new rather than a resend of an earlier example's
            span.span_id = secrets.token_bytes(8)
        if not on_resource:
            span.attributes.extend(ids)
    resource = {"attributes": ids} if on_resource else {}
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=spans)])]
    )
    with httpx.Client(base_url=fuzz_target.url, headers=PROTOBUF, timeout=60) as http:
        before = len(http.get(f"{API}/rollouts/{rollout_id}/spans").json())
        response = http.post("/v1/traces", content=request.SerializeToString())
        assert response.status_code == 200, response.text
        rejected = ExportTraceServiceResponse.FromString(response.content).partial_success.rejected_spans
        stored = http.get(f"{API}/rollouts/{rollout_id}/spans")
    assert stored.status_code == 200
    # What was stored reads back as valid spans; every span sent was either stored or counted.
    after = TypeAdapter(list[agl.Span]).validate_json(stored.content)
    assert len(after) - before + rejected == len(spans)
    if not known:
        assert rejected == len(spans) and len(after) == before


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "", "application/protobuf"])
async def test_otlp_other_content_types_get_415(served: Served, content_type: str) -> None:
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[_proto_span("x")])])]
    )
    headers = {**AUTH, "content-type": content_type} if content_type else AUTH
    response = await served.http.post("/v1/traces", content=request.SerializeToString(), headers=headers)
    assert response.status_code == 415
    error = error_of(response)
    assert error["type"] == "UnsupportedMediaType" and "application/x-protobuf" in error["message"]


@pytest.mark.parametrize("garbage", [b"not protobuf at all", b"\xff\xff\xff\xff", b"\x0a\xff\x01"])
async def test_otlp_garbage_with_the_protobuf_content_type_gets_400(served: Served, garbage: bytes) -> None:
    response = await served.http.post(
        "/v1/traces", content=garbage, headers={**PROTOBUF, "content-type": "application/x-protobuf; charset=binary"}
    )
    assert response.status_code == 400
    assert "ExportTraceServiceRequest" in error_of(response)["message"]
