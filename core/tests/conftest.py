"""Fixtures: one store per backend, so every behavioural test runs against each; a SQLite store (``db``);
and the store servers of the HTTP tests (helpers in ``served_store``)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from served_store import AUTH, KNOWN_IDS, SMALL_LIMIT, FuzzTarget, Served, running_server

import agentlightning as agl

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BACKENDS = ["memory", "sqlite", "http"]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[agl.LightningStore]:
    """A fresh store of each backend; the HTTP one is a real server on 127.0.0.1 over a SQLite file."""
    if request.param == "memory":
        backend: agl.LightningStore = agl.InMemoryStore(sweep_interval=0.05)
        yield backend
        await backend.close()
    elif request.param == "sqlite":
        backend = agl.SqliteStore(tmp_path / "runs.db", sweep_interval=0.05)
        yield backend
        await backend.close()
    else:
        inner = agl.SqliteStore(tmp_path / "runs.db", sweep_interval=0.05)
        server = agl.StoreServer(inner, port=0).start()
        client = agl.StoreClient(server.url, retry_seconds=2)
        yield client
        await client.close()
        server.stop()
        await inner.close()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[agl.SqliteStore]:
    """A SQLite store in a file, sweeping for expired attempts often."""
    store = agl.SqliteStore(tmp_path / "runs.db", sweep_interval=0.05)
    yield store
    await store.close()


def make_span(rollout_id: str, attempt_id: str, name: str = "step", **attributes: agl.AttributeValue) -> agl.Span:
    """A finished span with random ids."""
    import secrets
    import time

    now = time.time()
    return agl.Span(
        rollout_id=rollout_id,
        attempt_id=attempt_id,
        trace_id=secrets.token_hex(16),
        span_id=secrets.token_hex(8),
        name=name,
        start_time=now,
        end_time=now + 0.001,
        attributes=dict(attributes),
    )


# --- store servers for the HTTP tests (test_server_*.py) -----------------------------------------
# Starting and stopping a server takes a fair part of a second: the tests share one per body size limit, and
# each works on records of its own and checks what changed rather than what the store holds.
@pytest.fixture(scope="session")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[agl.SqliteStore, agl.StoreServer]]:
    with running_server(tmp_path_factory.mktemp("server") / "runs.db") as running:
        yield running


@pytest.fixture(scope="session")
def shared_small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[agl.SqliteStore, agl.StoreServer]]:
    with running_server(tmp_path_factory.mktemp("small") / "runs.db", max_body_bytes=SMALL_LIMIT) as running:
        yield running


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


@pytest.fixture(scope="session")
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
        KNOWN_IDS["rollout_id"] = [r.rollout_id for r in rollouts]
        KNOWN_IDS["attempt_id"] = [a.attempt_id for r in rollouts for a in await store.query_attempts(r.rollout_id)]
        KNOWN_IDS["resources_id"] = ["rs-fuzz"]
        return otlp.rollout_id, otlp.attempt.attempt_id

    with running_server(tmp_path_factory.mktemp("fuzz") / "runs.db") as (store, server):
        otlp_ids = asyncio.run(populate(store))
        yield FuzzTarget(
            server.url, KNOWN_IDS["rollout_id"], KNOWN_IDS["attempt_id"], KNOWN_IDS["resources_id"], otlp_ids
        )
