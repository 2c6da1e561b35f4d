"""The store server's token: every route but health needs it, over the REST API, OTLP ingest and the schema alike.

The tests talk to a real server on 127.0.0.1 (the ``served`` fixture), shared by the server tests.
"""

from __future__ import annotations

import httpx
import pytest
from conftest import make_span
from served_store import API, TOKEN, Served, error_of

import agentlightning as agl

PROTECTED = [
    ("GET", "/statistics", None),
    ("POST", "/rollouts", {"input": 1}),
    ("POST", "/queue/dequeue", {}),
    ("POST", "/queue/dequeue-many", {"limit": 4}),
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
