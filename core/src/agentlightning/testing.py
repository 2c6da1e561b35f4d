"""Pytest fixtures and helpers for testing agents, integrations and trainers against a real store.

Import the fixtures into a ``conftest.py`` (``from agentlightning.testing import store as store``), or load them
all from the root one with ``pytest_plugins = ["agentlightning.testing"]``:

- ``store``: a :class:`~agentlightning.SqliteStore` in the test's temporary folder, closed after the test;
- ``no_outbound_connections`` (autouse where imported): fails a test whose process tries to connect anywhere but
  this machine, so a framework that phones home (telemetry, a trace exporter, a tokenizer download) is caught.

Helpers: :func:`rollout_spans` (a finished rollout's spans, in order) and :func:`is_gateway` (a span the gateway
recorded).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentlightning import semconv
from agentlightning.store.sqlite import SqliteStore
from agentlightning.types import Rollout, Span

__all__ = ["is_gateway", "no_outbound_connections", "rollout_spans", "store"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """A SQLite store in the test's temporary folder (``runs.db``), closed after the test."""
    opened = SqliteStore(tmp_path / "runs.db")
    yield opened
    asyncio.run(opened.close())


@pytest.fixture(autouse=True)
def no_outbound_connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Fail the test if anything in it tried to connect anywhere but this machine (the attempt is refused)."""
    attempts: list[Any] = []
    connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in _LOOPBACK and self.family != socket.AF_UNIX:
            attempts.append(address)
            raise ConnectionRefusedError(f"test guard: no connections off this machine ({address})")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield attempts
    assert not attempts, f"tried to reach another machine: {attempts}"


def rollout_spans(store: SqliteStore, rollout: Rollout) -> list[Span]:
    """The spans of a rollout's attempts, by start time (then sequence number)."""
    spans = asyncio.run(store.query_spans(rollout.rollout_id))
    return sorted(spans, key=lambda s: (s.start_time, s.sequence_id or 0))


def is_gateway(span: Span) -> bool:
    """Whether the gateway recorded ``span`` (an LLM call with its token ids)."""
    return span.attributes.get(semconv.AGL_LLM_GATEWAY) is True
