"""Fixtures: one store per backend, so every behavioural test runs against each."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

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
