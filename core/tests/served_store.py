"""A store served over HTTP on 127.0.0.1 with a token, as the server tests (``test_server_*.py``) meet it.

The servers themselves are fixtures in ``conftest.py`` (``served``, ``served_small``, ``fuzz_target``): real
``StoreServer`` instances in a background thread, over a SQLite file, shared by all the server tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

import agentlightning as agl
from agentlightning.server import API_PREFIX

TOKEN = "s3cret"
AUTH = {"authorization": f"Bearer {TOKEN}"}
PROTOBUF = {**AUTH, "content-type": "application/x-protobuf"}
SMALL_LIMIT = 10_000
API = API_PREFIX


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
KNOWN_IDS: dict[str, list[str]] = {}


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The ``error`` object of a JSON error response (and check its shape)."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["type"], str) and isinstance(body["error"]["message"], str), body
    return body["error"]


async def started_rollout(served: Served) -> agl.AttemptedRollout:
    return await served.store.start_rollout(agl.RolloutRequest(input={"q": "2+2"}), worker_id="w")
