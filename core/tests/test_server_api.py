"""The store server's REST API answers: unknown records and paths, wrong methods, conflicts, body size limits.

The tests talk to real servers on 127.0.0.1 (the ``served`` and ``served_small`` fixtures), shared by the server
tests.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator

from served_store import API, PROTOBUF, SMALL_LIMIT, TOKEN, Served, error_of, started_rollout

import agentlightning as agl


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
