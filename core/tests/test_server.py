"""The store server over HTTP, as its users meet it: tokens, bad input, size limits, the OpenAPI schema, OTLP ingest.

The tests talk to real servers on 127.0.0.1 (``StoreServer`` in a background thread, over a SQLite file),
shared by the module's tests. The fuzzing tests (schemathesis against the server's own OpenAPI document, and
hypothesis) check that no request, however malformed, makes the server answer 5xx.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import secrets
import socket
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import hypothesis.strategies as st
import jsonschema_rs
import pytest
import schemathesis
from conftest import make_span
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Status
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from pydantic import TypeAdapter
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

import agentlightning as agl
from agentlightning import semconv
from agentlightning.server import API_PREFIX, create_app, openapi_schema

TOKEN = "s3cret"
AUTH = {"authorization": f"Bearer {TOKEN}"}
PROTOBUF = {**AUTH, "content-type": "application/x-protobuf"}
SMALL_LIMIT = 10_000
API = API_PREFIX


# --- fixtures ----------------------------------------------------------------------------------
@contextmanager
def running_server(path: Path, **kwargs: Any) -> Iterator[tuple[agl.SqliteStore, agl.StoreServer]]:
    """A SQLite store at ``path`` served on 127.0.0.1 with ``TOKEN`` (and ``StoreServer`` keyword arguments)."""
    store = agl.SqliteStore(path, sweep_interval=0.05)
    server = agl.StoreServer(store, port=0, token=TOKEN, **kwargs).start()
    try:
        yield store, server
    finally:
        server.stop()
        asyncio.run(store.close())


# Starting and stopping a server takes a fair part of a second: the tests share one per body size limit, and
# each works on records of its own and checks what changed rather than what the store holds.
@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[agl.SqliteStore, agl.StoreServer]]:
    with running_server(tmp_path_factory.mktemp("server") / "runs.db") as running:
        yield running


@pytest.fixture(scope="module")
def shared_small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[agl.SqliteStore, agl.StoreServer]]:
    with running_server(tmp_path_factory.mktemp("small") / "runs.db", max_body_bytes=SMALL_LIMIT) as running:
        yield running


@dataclass
class Served:
    """A running server, the store behind it, and an HTTP client that sends the token."""

    store: agl.SqliteStore
    server: agl.StoreServer
    http: httpx.AsyncClient

    @property
    def url(self) -> str:
        return self.server.url

    async def counts(self) -> tuple[int, int, int]:
        """How many rollouts, spans and resources versions the store holds."""
        stats = await self.store.statistics()
        return sum(stats.rollouts.values()), stats.spans, stats.resources_versions


@pytest.fixture
async def served(shared_server: tuple[agl.SqliteStore, agl.StoreServer]) -> AsyncIterator[Served]:
    """The shared server that requires ``TOKEN``, with a client of this test's event loop."""
    store, server = shared_server
    async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=30) as http:
        yield Served(store, server, http)


@pytest.fixture
async def served_small(shared_small_server: tuple[agl.SqliteStore, agl.StoreServer]) -> AsyncIterator[Served]:
    """The shared server that takes bodies of at most ``SMALL_LIMIT`` bytes."""
    store, server = shared_small_server
    async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=30) as http:
        yield Served(store, server, http)


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The ``error`` object of a JSON error response (and check its shape)."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["type"], str) and isinstance(body["error"]["message"], str), body
    return body["error"]


async def started_rollout(served: Served) -> agl.AttemptedRollout:
    return await served.store.start_rollout(agl.RolloutRequest(input={"q": "2+2"}), worker_id="w")


# --- token auth --------------------------------------------------------------------------------
PROTECTED = [
    ("GET", "/statistics", None),
    ("POST", "/rollouts", {"input": 1}),
    ("POST", "/queue/dequeue", {}),
    ("GET", "/rollouts/ro-x/spans", None),
    ("POST", "/spans", {"spans": []}),
    ("GET", "/resources/latest", None),
]


@pytest.mark.parametrize(
    "given", [None, "Bearer wrong", "s3cret", "Bearer s3cret2", "Bearer", "Basic czNjcmV0", "s3cret Bearer"]
)
async def test_requests_without_the_right_token_get_401_and_change_nothing(served: Served, given: str | None) -> None:
    headers = {} if given is None else {"authorization": given}
    before = await served.counts()
    async with httpx.AsyncClient(base_url=served.url, headers=headers) as anonymous:
        for method, path, body in PROTECTED:
            response = await anonymous.request(method, API + path, json=body)
            assert response.status_code == 401, (method, path)
            error = error_of(response)
            assert error["type"] == "Unauthorized"
            assert ("had no token" if given is None else "had a wrong token") in error["message"]
            assert "Authorization: Bearer" in error["message"]
    assert await served.counts() == before


async def test_otlp_ingest_and_the_schema_need_the_token_too(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.url) as anonymous:
        traces = await anonymous.post("/v1/traces", content=b"", headers={"content-type": "application/x-protobuf"})
        schema = await anonymous.get("/openapi.json")
    assert traces.status_code == 401 and error_of(traces)["type"] == "Unauthorized"
    assert schema.status_code == 401


@pytest.mark.parametrize("given", ["Bearer s3cret", "bearer s3cret", "BEARER  s3cret"])
async def test_the_auth_scheme_is_case_insensitive(served: Served, given: str) -> None:
    async with httpx.AsyncClient(base_url=served.url, headers={"authorization": given}) as client:
        response = await client.get(API + "/statistics")
    assert response.status_code == 200, response.text  # RFC 9110 section 11.1: the scheme is case-insensitive


async def test_health_needs_no_token(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.url) as anonymous:
        response = await anonymous.get(API + "/health")
        wrong = await anonymous.get(API + "/health", headers={"authorization": "Bearer wrong"})
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert wrong.status_code == 200


async def test_store_client_with_the_token_works_end_to_end(served: Served) -> None:
    before = await served.counts()
    client = agl.StoreClient(served.url, token=TOKEN, retry_seconds=2)
    try:
        await client.enqueue_rollout({"q": 1}, mode=agl.RolloutMode.TRAIN)
        got = await client.dequeue_rollout(worker_id="w1")
        assert got is not None and got.input == {"q": 1}
        await client.add_span(make_span(got.rollout_id, got.attempt.attempt_id, "step", reward=1.0))
        await client.update_attempt(got.rollout_id, got.attempt.attempt_id, status=agl.AttemptStatus.SUCCEEDED)
        assert [s.name for s in await client.query_spans(got.rollout_id)] == ["step"]
        assert (await client.get_rollout_by_id(got.rollout_id)).status == agl.RolloutStatus.SUCCEEDED
        published = await client.add_resources({"prompt": agl.PromptTemplate(template="Hi {name}")})
        assert (await client.get_latest_resources()) == published
    finally:
        await client.close()
    # The server wrote to its own store: what the client saw is really there.
    assert await served.counts() == (before[0] + 1, before[1] + 1, before[2] + 1)


@pytest.mark.parametrize("token", [None, "wrong"])
async def test_store_client_without_the_token_raises_unauthorized(served: Served, token: str | None) -> None:
    before = await served.counts()
    client = agl.StoreClient(served.url, token=token, retry_seconds=1)
    try:
        with pytest.raises(agl.Unauthorized, match="requires a token"):
            await client.statistics()
        with pytest.raises(agl.Unauthorized):
            await client.enqueue_rollout("x")
    finally:
        await client.close()
    assert await served.counts() == before


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "example.com"])
async def test_serving_beyond_loopback_needs_a_token(host: str) -> None:
    store = agl.InMemoryStore()
    try:
        with pytest.raises(agl.StoreError, match="without a token"):
            agl.StoreServer(store, host=host)
        with pytest.raises(agl.StoreError, match="without a token"):
            agl.StoreServer(store, host=host, token="")
        server = agl.StoreServer(store, host=host, token=TOKEN)  # allowed; not started
        assert server.token == TOKEN
        for loopback in ("127.0.0.1", "localhost", "::1"):
            agl.StoreServer(store, host=loopback)
    finally:
        await store.close()


# --- bad input ---------------------------------------------------------------------------------
# (path, raw body, words the message must contain): each is answered 422 ValidationError.
BAD_BODIES = [
    ("/rollouts", b"{not json", ["Invalid JSON"]),
    ("/rollouts", b'{"input": 1,}', ["Invalid JSON"]),
    ("/rollouts", b"\xff\xfe{}", ["Invalid JSON"]),
    ("/rollouts", b"", ["input", "Field required"]),
    ("/rollouts", b"[]", ["body", "object"]),
    ("/rollouts", b'"x"', ["body", "object"]),
    ("/rollouts", b'{"mode": "train"}', ["input", "Field required"]),
    ("/rollouts", b'{"input": 1, "config": {"max_attempts": "many"}}', ["config.max_attempts", "integer"]),
    ("/rollouts", b'{"input": 1, "config": {"max_attempts": 0}}', ["config.max_attempts"]),
    ("/rollouts", b'{"input": 1, "config": {"timeout_seconds": -1}}', ["config.timeout_seconds"]),
    ("/rollouts", b'{"input": 1, "config": {"retry_on": ["succeeded"]}}', ["config.retry_on", "succeeded"]),
    ("/rollouts", b'{"input": 1, "mode": "production"}', ["mode", "'train'"]),
    ("/rollouts", b'{"input": 1, "resources_id": "has space"}', ["resources_id"]),
    ("/rollouts", b'{"input": 1, "metadata": []}', ["metadata"]),
    ("/rollouts", b'{"input": 1, "priority": 3}', ["priority", "Extra inputs"]),
    ("/rollouts/batch", b'{"rollouts": [{"input": 1}, {"inptu": 2}]}', ["rollouts.1.input", "rollouts.1.inptu"]),
    ("/rollouts/start", b'{"rollout": {"input": 1}, "worker_id": ""}', ["worker_id"]),
    ("/rollouts/query", b'{"limit": -1}', ["limit"]),
    ("/rollouts/query", b'{"status": ["lost"]}', ["status.0"]),
    ("/rollouts/wait", b'{"rollout_ids": [], "timeout": 1e9}', ["timeout", "300"]),
    ("/rollouts/wait", b'{"rollout_ids": "ro-1"}', ["rollout_ids", "array"]),
    ("/spans", b'{"spans": [{"name": "x"}]}', ["spans.0.rollout_id", "spans.0.trace_id"]),
    ("/resources", b'{"resources": {"llm": {"resource_type": "llm"}}}', ["base_url", "model"]),
    ("/resources", b'{"resources": {"x": 5}}', ["resources.x"]),
]


@pytest.mark.parametrize(("path", "raw", "words"), BAD_BODIES)
async def test_bad_bodies_get_422_naming_what_was_wrong_and_write_nothing(
    served: Served, path: str, raw: bytes, words: list[str]
) -> None:
    before = await served.counts()
    response = await served.http.post(API + path, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["type"] == "ValidationError"
    for word in words:
        assert word in error["message"], error["message"]
    assert error["details"] and all({"loc", "msg", "type"} <= set(d) for d in error["details"])
    assert await served.counts() == before


async def test_a_refused_update_changes_nothing(served: Served) -> None:
    got = await started_rollout(served)
    rollout_path = f"{API}/rollouts/{got.rollout_id}"
    attempt_path = f"{rollout_path}/attempts/{got.attempt.attempt_id}"
    bad = await served.http.patch(rollout_path, json={"metadata": {"k": 1}, "config": {"max_attempts": "many"}})
    assert bad.status_code == 422 and "config.max_attempts" in error_of(bad)["message"]

    await served.store.update_attempt(got.rollout_id, got.attempt.attempt_id, status=agl.AttemptStatus.FAILED)
    before = (await served.store.get_rollout_by_id(got.rollout_id), await served.store.query_attempts(got.rollout_id))
    assert before[0].status == agl.RolloutStatus.FAILED
    # Valid changes sent with a forbidden transition are refused as a whole.
    refused = await served.http.patch(rollout_path, json={"metadata": {"k": 1}, "mode": "val", "status": "running"})
    assert refused.status_code == 409 and error_of(refused)["type"] == "InvalidStatusTransition"
    refused = await served.http.patch(
        attempt_path, json={"worker_id": "w2", "metadata": {"k": 1}, "status": "succeeded"}
    )
    assert refused.status_code == 409
    error = error_of(refused)
    assert error["type"] == "InvalidStatusTransition" and "already ended as 'failed'" in error["message"]
    after = (await served.store.get_rollout_by_id(got.rollout_id), await served.store.query_attempts(got.rollout_id))
    assert after == before


async def test_unknown_ids_get_404_with_the_kind_of_record(served: Served) -> None:
    got = await started_rollout(served)
    rid, aid = got.rollout_id, got.attempt.attempt_id
    cases = [
        ("GET", "/rollouts/ro-missing", None, "RolloutNotFound", "ro-missing"),
        ("PATCH", "/rollouts/ro-missing", {"metadata": {}}, "RolloutNotFound", "ro-missing"),
        ("GET", "/rollouts/ro-missing/attempts", None, "RolloutNotFound", "ro-missing"),
        ("POST", "/rollouts/ro-missing/attempts", {}, "RolloutNotFound", "ro-missing"),
        ("PATCH", "/rollouts/ro-missing/attempts/at-missing", {}, "RolloutNotFound", "ro-missing"),
        ("POST", "/rollouts/ro-missing/attempts/at-missing/heartbeat", None, "RolloutNotFound", "ro-missing"),
        ("GET", "/rollouts/ro-missing/spans", None, "RolloutNotFound", "ro-missing"),
        ("POST", "/rollouts/wait", {"rollout_ids": [rid, "ro-missing"], "timeout": 0}, "RolloutNotFound", "ro-missing"),
        ("PATCH", f"/rollouts/{rid}/attempts/at-missing", {"status": "failed"}, "AttemptNotFound", "at-missing"),
        ("POST", f"/rollouts/{rid}/attempts/at-missing/heartbeat", None, "AttemptNotFound", "at-missing"),
        ("GET", f"/rollouts/{rid}/spans?attempt_id=at-missing", None, "AttemptNotFound", "at-missing"),
        ("GET", "/resources/rs-missing", None, "ResourcesNotFound", "rs-missing"),
    ]
    # An attempt of another rollout is not found under this one.
    other = await started_rollout(served)
    cases.append(("PATCH", f"/rollouts/{rid}/attempts/{other.attempt.attempt_id}", {}, "AttemptNotFound", rid))
    for method, path, body, kind, word in cases:
        response = await served.http.request(method, API + path, json=body)
        assert response.status_code == 404, (method, path, response.text)
        error = error_of(response)
        assert error["type"] == kind and word in error["message"], (method, path, error)
    # Nothing happened to the real attempt along the way.
    (attempt,) = await served.store.query_attempts(rid)
    assert attempt.status == agl.AttemptStatus.PREPARING and attempt.attempt_id == aid


async def test_unknown_paths_get_404_and_wrong_methods_405_with_allow(served: Served) -> None:
    for path in ("/api/v1/nope", "/api/v2/rollouts", "/", "/v1/logs", "/api/v1/rollouts/a/b/c/d"):
        response = await served.http.get(path)
        assert response.status_code == 404, path
        error = error_of(response)
        assert error["type"] == "NotFound" and path in error["message"]
    expected = {
        ("DELETE", "/api/v1/rollouts/ro-1"): {"GET", "PATCH"},
        ("PUT", "/api/v1/rollouts"): {"POST"},
        ("GET", "/api/v1/rollouts"): {"POST"},
        ("POST", "/api/v1/statistics"): {"GET"},
        ("GET", "/v1/traces"): {"POST"},
        ("DELETE", "/api/v1/rollouts/ro-1/attempts"): {"GET", "POST"},
        ("POST", "/openapi.json"): {"GET"},
        # Also fits /rollouts/{rollout_id}, but the literal path is the resource meant.
        ("OPTIONS", "/api/v1/rollouts/batch"): {"POST"},
    }
    for (method, path), allowed in expected.items():
        response = await served.http.request(method, path)
        assert response.status_code == 405, (method, path)
        error = error_of(response)
        assert error["type"] == "MethodNotAllowed" and method in error["message"]
        # RFC 9110: a 405 lists the methods the resource does support.
        assert {m.strip() for m in response.headers["allow"].split(",")} - {"HEAD"} == allowed, (method, path)


async def test_bodies_over_the_limit_get_413_declared_or_chunked(served_small: Served) -> None:
    served = served_small
    before = await served.counts()
    padding = " " * (SMALL_LIMIT - 100)
    fits = json.dumps({"input": "x", "metadata": {"pad": padding[: SMALL_LIMIT - 200]}}).encode()
    too_big = json.dumps({"input": "x", "metadata": {"pad": padding + " " * 200}}).encode()
    assert len(fits) <= SMALL_LIMIT < len(too_big)

    async def chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
        for start in range(0, len(data), size):
            yield data[start : start + size]

    declared = await served.http.post(API + "/rollouts", content=too_big)
    assert declared.status_code == 413
    error = error_of(declared)
    assert error["type"] == "RequestTooLarge" and str(SMALL_LIMIT) in error["message"]

    chunked = await served.http.post(API + "/rollouts", content=chunks(too_big))
    assert chunked.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in chunked.request.headers
    assert chunked.status_code == 413 and error_of(chunked)["type"] == "RequestTooLarge"

    # OTLP ingest has the same limit.
    otlp = await served.http.post("/v1/traces", content=b"\n" * (SMALL_LIMIT + 1), headers=PROTOBUF)
    assert otlp.status_code == 413
    assert await served.counts() == before

    # The same connection keeps working, and a body within the limit is taken, declared or chunked.
    assert (await served.http.post(API + "/rollouts", content=fits)).status_code == 200
    assert (await served.http.post(API + "/rollouts", content=chunks(fits))).status_code == 200
    assert await served.counts() == (before[0] + 2, *before[1:])


def test_a_body_over_the_limit_is_refused_before_it_is_read(
    shared_small_server: tuple[agl.SqliteStore, agl.StoreServer],
) -> None:
    """A declared oversize body is answered at once: the server does not wait for bytes that never come."""
    _, server = shared_small_server
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (
            f"POST {API}/rollouts HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {10 * SMALL_LIMIT}\r\n\r\n"
        )
        sock.sendall(head.encode())  # and no body at all
        reply = b""
        while b"\r\n" not in reply and (chunk := sock.recv(65536)):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413"), reply


async def test_a_span_batch_with_one_bad_span_stores_none_of_it(served: Served) -> None:
    got = await started_rollout(served)
    rid, aid = got.rollout_id, got.attempt.attempt_id
    good = [make_span(rid, aid, f"good{i}").model_dump(mode="json") for i in range(3)]
    spans_before = (await served.counts())[1]

    invalid = {**make_span(rid, aid, "bad").model_dump(mode="json"), "span_id": "not-hex"}
    response = await served.http.post(API + "/spans", json={"spans": [*good, invalid]})
    assert response.status_code == 422
    assert "spans.3.span_id" in error_of(response)["message"]

    wrong_attribute = {**make_span(rid, aid, "bad").model_dump(mode="json"), "attributes": {"mixed": [1, "a"]}}
    response = await served.http.post(API + "/spans", json={"spans": [*good, wrong_attribute]})
    assert response.status_code == 422 and "spans.3.attributes.mixed" in error_of(response)["message"]

    unknown_attempt = make_span(rid, "at-missing", "bad").model_dump(mode="json")
    response = await served.http.post(API + "/spans", json={"spans": [*good, unknown_attempt]})
    assert response.status_code == 404
    error = error_of(response)
    assert error["type"] == "AttemptNotFound" and "at-missing" in error["message"]

    other = await started_rollout(served)
    foreign = make_span(other.rollout_id, other.attempt.attempt_id, "other").model_dump(mode="json")
    mismatched = {**make_span(rid, aid, "bad").model_dump(mode="json"), "rollout_id": other.rollout_id}
    response = await served.http.post(API + "/spans", json={"spans": [foreign, *good, mismatched]})
    assert response.status_code == 404 and error_of(response)["type"] == "AttemptNotFound"

    spans = await served.http.get(f"{API}/rollouts/{rid}/spans")
    assert spans.status_code == 200 and spans.json() == []
    assert (await served.http.get(f"{API}/rollouts/{other.rollout_id}/spans")).json() == []
    assert (await served.counts())[1] == spans_before
    # The attempt was not touched by the refused batches either.
    assert (await served.store.query_attempts(rid))[0].status == agl.AttemptStatus.PREPARING

    # The same good spans on their own are stored, numbered in order.
    response = await served.http.post(API + "/spans", json={"spans": good})
    assert response.status_code == 200 and response.json() == {"sequence_ids": [1, 2, 3]}
    stored = (await served.http.get(f"{API}/rollouts/{rid}/spans")).json()
    assert [span["name"] for span in stored] == ["good0", "good1", "good2"]


# "a/b", "." and ".." could not be fetched by id (clients split or resolve them away), "latest" names the newest
# version in GET /resources/latest, and a rollout's resources_id could not name the others.
@pytest.mark.parametrize("resources_id", ["a/b", ".", "..", "latest", "has space", "ü", ""])
async def test_resources_ids_that_could_not_be_used_are_refused(served: Served, resources_id: str) -> None:
    body = {"resources": {"p": {"resource_type": "prompt_template", "template": "x"}}, "resources_id": resources_id}
    before = await served.counts()
    response = await served.http.post(API + "/resources", json=body)
    assert response.status_code == 422 and "resources_id" in error_of(response)["message"]
    assert await served.counts() == before


async def test_resources_round_trip_by_id_and_latest(served: Served) -> None:
    client = agl.StoreClient(served.url, token=TOKEN, retry_seconds=1)
    try:
        first = await client.add_resources({"p": agl.PromptTemplate(template="a")}, resources_id="rs-1.0~beta+x")
        second = await client.add_resources({"p": agl.PromptTemplate(template="b")})
        assert second.version == first.version + 1
        assert await client.get_resources_by_id("rs-1.0~beta+x") == first
        assert await client.get_latest_resources() == second
    finally:
        await client.close()


async def test_conflicts_get_409(served: Served) -> None:
    resources = {"resources": {"p": {"resource_type": "prompt_template", "template": "x"}}, "resources_id": "rs-twice"}
    assert (await served.http.post(API + "/resources", json=resources)).status_code == 200
    again = await served.http.post(API + "/resources", json=resources)
    assert again.status_code == 409 and error_of(again)["type"] == "StoreConflict"
    got = await started_rollout(served)
    active = await served.http.post(f"{API}/rollouts/{got.rollout_id}/attempts", json={})
    assert active.status_code == 409 and "active attempt" in error_of(active)["message"]


# --- OpenAPI -----------------------------------------------------------------------------------
def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


async def test_openapi_json_is_a_valid_openapi_3_1_document_listing_every_route(served: Served) -> None:
    response = await served.http.get("/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document["openapi"].startswith("3.1.")
    schemathesis.openapi.from_dict(document).validate()  # against the OpenAPI 3.1 meta-schema
    for ref in set(_refs(document)):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in document["components"]["schemas"], ref

    # Every route the app serves is documented with its methods, and nothing else is.
    store = agl.InMemoryStore()
    try:
        app = create_app(store, token=TOKEN).app  # type: ignore[attr-defined]
    finally:
        await store.close()
    served_routes = {
        (method.lower(), route.path)
        for route in app.routes
        if route.path != "/openapi.json"
        for method in route.methods
        if method != "HEAD"
    }
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert documented == served_routes
    operation_ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert "200" in operation["responses"] and "4XX" in operation["responses"], (method, path)
            if path != API + "/health":
                assert operation["security"] == [{"bearer": []}], (method, path)
            params = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert params == {part[1:-1] for part in path.split("/") if part.startswith("{")}, (method, path)
    assert document["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}


async def test_the_schema_tells_what_the_server_accepts_and_answers(served: Served) -> None:
    document = (await served.http.get("/openapi.json")).json()

    def validator(name: str) -> Any:
        return jsonschema_rs.validator_for({"$ref": f"#/components/schemas/{name}", **document})

    resources = {
        "llm": {"resource_type": "llm", "base_url": "http://127.0.0.1:8000/v1", "model": "m"},
        "prompt": {"resource_type": "prompt_template", "template": "Hi {name}"},
        "ckpt": {"resource_type": "checkpoint", "path": "/ckpt/1"},
    }
    assert validator("AddResourcesRequest").is_valid({"resources": resources})
    response = await served.http.post(API + "/resources", json={"resources": resources})
    assert response.status_code == 200
    # Each resource matches exactly one member of the union (oneOf), as the server reads it.
    validator("Resources").validate(response.json())
    latest = await served.http.get(API + "/resources/latest")
    validator("Resources").validate(latest.json())

    # What the schema refuses, the server refuses too.
    for body in (
        {"resources": {"llm": {"base_url": "http://x", "model": "m"}}},  # no resource_type: not an LLM
        {"resources": {"llm": {"resource_type": "llm", "model": "m"}}},
    ):
        assert not validator("AddResourcesRequest").is_valid(body)
        assert (await served.http.post(API + "/resources", json=body)).status_code == 422
    for retry_on, accepted in ((["failed", "timeout", "unresponsive"], True), (["cancelled"], False)):
        body = {"input": 1, "config": {"retry_on": retry_on}}
        assert validator("RolloutRequest").is_valid(body) is accepted
        assert (await served.http.post(API + "/rollouts", json=body)).status_code == (200 if accepted else 422)
    # Bodies whose fields all have defaults may be left out.
    assert (await served.http.post(API + "/rollouts/query")).status_code == 200
    assert document["paths"][API + "/rollouts/query"]["post"]["requestBody"]["required"] is False
    assert document["paths"][API + "/rollouts"]["post"]["requestBody"]["required"] is True


# --- fuzzing -----------------------------------------------------------------------------------
@dataclass
class FuzzTarget:
    """A live server with a few records of each kind in it, for the fuzzing tests."""

    url: str
    rollout_ids: list[str]
    attempt_ids: list[str]
    resources_ids: list[str]
    # A rollout of the OTLP fuzzing alone: its spans hold NaN and other oddities.
    otlp_ids: tuple[str, str]


# Ids of real records, filled in by ``fuzz_target``; generated path parameters use them about half the time.
_KNOWN_IDS: dict[str, list[str]] = {}


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    async def populate(store: agl.LightningStore) -> tuple[str, str]:
        otlp = await store.start_rollout(agl.RolloutRequest(input="otlp"))
        await store.enqueue_many_rollouts([agl.RolloutRequest(input=i) for i in range(3)])
        running = await store.dequeue_rollout(worker_id="w1")
        assert running is not None
        await store.add_span(make_span(running.rollout_id, running.attempt.attempt_id))
        started = await store.start_rollout(
            agl.RolloutRequest(input="direct", config=agl.RolloutConfig(max_attempts=3))
        )
        await store.update_attempt(started.rollout_id, started.attempt.attempt_id, status=agl.AttemptStatus.FAILED)
        await store.add_resources({"p": agl.PromptTemplate(template="Hi {name}")}, resources_id="rs-fuzz")
        rollouts = [r for r in await store.query_rollouts() if r.rollout_id != otlp.rollout_id]
        _KNOWN_IDS["rollout_id"] = [r.rollout_id for r in rollouts]
        _KNOWN_IDS["attempt_id"] = [a.attempt_id for r in rollouts for a in await store.query_attempts(r.rollout_id)]
        _KNOWN_IDS["resources_id"] = ["rs-fuzz"]
        return otlp.rollout_id, otlp.attempt.attempt_id

    with running_server(tmp_path_factory.mktemp("fuzz") / "runs.db") as (store, server):
        otlp_ids = asyncio.run(populate(store))
        yield FuzzTarget(
            server.url, _KNOWN_IDS["rollout_id"], _KNOWN_IDS["attempt_id"], _KNOWN_IDS["resources_id"], otlp_ids
        )


FUZZ_SCHEMA = schemathesis.openapi.from_dict(
    openapi_schema(),
    config=schemathesis.Config.from_dict(
        {
            "seed": 20240611,
            # Valid and invalid requests, ~20 of each kind per operation (plus the coverage phase), the same ones every run.
            "generation": {"max-examples": 20, "deterministic": True, "mode": "all"},
            "phases": {"stateful": {"enabled": False}},
        }
    ),
)
# OTLP bodies are opaque bytes to the fuzzer: send them as generated.
schemathesis.serializer.alias("application/x-protobuf", "application/octet-stream")


@FUZZ_SCHEMA.hook
def flatmap_path_parameters(context: schemathesis.HookContext, path_parameters: dict[str, Any] | None) -> Any:
    """Send some requests to records that exist, so the handlers run past the lookup."""
    if not isinstance(path_parameters, dict) or not path_parameters:
        return st.just(path_parameters)
    real = {name: _KNOWN_IDS.get(name) for name in path_parameters}
    if not all(real.values()):
        return st.just(path_parameters)
    return st.just(path_parameters) | st.fixed_dictionaries(
        {name: st.sampled_from(ids or []) for name, ids in real.items()}
    )


def _assert_no_masked_internal_error(status: int, content_type: str, content: bytes) -> None:
    # The store wraps an unexpected exception (a bug) in a StoreError, which the server answers with 400:
    # such a 4xx is a server error in disguise.
    if status >= 400 and content_type.startswith("application/json"):
        error = json.loads(content).get("error", {})
        message = error.get("message", "")
        assert error.get("type") != "InternalError", message
        assert not message.startswith(("Store operation failed", "The store could not commit")), message


def no_masked_internal_error(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> bool | None:
    """Schemathesis check: no 4xx that stands for a failure inside the store."""
    _assert_no_masked_internal_error(
        response.status_code, response.headers.get("content-type", [""])[0], response.content
    )
    return None


# Besides no 5xx: responses match the schema, and what the schema calls valid is accepted. (Not the converse:
# pydantic's lax mode takes some values of the wrong JSON type, such as 0 for false, on purpose.)
FUZZ_CHECKS = [
    not_a_server_error,
    no_masked_internal_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    positive_data_acceptance,
    unsupported_method,
    allow_header_conformance,
]


@FUZZ_SCHEMA.parametrize()
def test_no_generated_request_gets_a_server_error(case: schemathesis.Case, fuzz_target: FuzzTarget) -> None:
    checks = FUZZ_CHECKS
    if case.operation.path == "/v1/traces":  # the schema cannot say which bytes are a valid protobuf message
        checks = [check for check in checks if check is not positive_data_acceptance]
    case.call_and_validate(base_url=fuzz_target.url, headers=AUTH, checks=checks, timeout=60)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
# Keys of real fields, so that arbitrary values land in them too.
FIELDS = st.sampled_from(
    [
        "input",
        "rollout",
        "rollouts",
        "spans",
        "status",
        "config",
        "metadata",
        "worker_id",
        "resources",
        "resources_id",
        "rollout_ids",
        "timeout",
        "limit",
        "offset",
        "mode",
        "max_attempts",
        "name",
        "trace_id",
    ]
)
BODIES = JSON | st.dictionaries(FIELDS, JSON, max_size=4)
WRITE_OPERATIONS = [
    (method.upper(), path)
    for path, item in openapi_schema()["paths"].items()
    for method in item
    if method in ("post", "patch")
]


def _write_requests(http: httpx.Client, target: FuzzTarget, real: bool) -> Iterator[tuple[str, str]]:
    """Every POST / PATCH operation, with the ids of a real rollout and its latest attempt, or unknown ones."""
    ids = {"rollout_id": "ro-missing", "attempt_id": "at-missing", "resources_id": "rs-missing"}
    if real:
        ids["rollout_id"] = target.rollout_ids[0]
        ids["attempt_id"] = http.get(f"{API}/rollouts/{ids['rollout_id']}/attempts").json()[-1]["attempt_id"]
    for method, path in WRITE_OPERATIONS:
        for name, value in ids.items():
            path = path.replace("{" + name + "}", value)
        yield method, path


@hypothesis.settings(max_examples=40, deadline=None, derandomize=True, database=None)
@hypothesis.given(body=BODIES, real=st.booleans())
def test_arbitrary_json_to_every_write_endpoint_never_gets_a_server_error(
    fuzz_target: FuzzTarget, body: Any, real: bool
) -> None:
    content = json.dumps(body).encode()
    with httpx.Client(base_url=fuzz_target.url, headers=AUTH, timeout=60) as http:
        for method, path in _write_requests(http, fuzz_target, real):
            response = http.request(method, path, content=content, headers={"content-type": "application/json"})
            assert response.status_code < 500, (method, path, response.text)
            _assert_no_masked_internal_error(response.status_code, response.headers["content-type"], response.content)
            if response.status_code >= 400:
                assert error_of(response)["message"]


@hypothesis.settings(max_examples=25, deadline=None, derandomize=True, database=None)
@hypothesis.given(raw=st.binary(max_size=512), real=st.booleans())
def test_arbitrary_bytes_to_every_write_endpoint_never_get_a_server_error(
    fuzz_target: FuzzTarget, raw: bytes, real: bool
) -> None:
    with httpx.Client(base_url=fuzz_target.url, headers=AUTH, timeout=60) as http:
        for method, path in _write_requests(http, fuzz_target, real):
            for content_type in ("application/json", "application/x-protobuf"):
                response = http.request(method, path, content=raw, headers={"content-type": content_type})
                assert response.status_code < 500, (method, path, response.text)
                _assert_no_masked_internal_error(
                    response.status_code, response.headers["content-type"], response.content
                )


# --- OTLP ingest -------------------------------------------------------------------------------
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
