"""The SQLite store's file across versions: a file an earlier Agent Lightning wrote opens with its spans intact."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import make_span

import agentlightning as agl
from agentlightning.store.base import EncodedSpan

# The attempts and spans tables of schema 1 (agentlightning-core before the spans' integer keys), as it made them.
TABLES_1 = """
CREATE TABLE attempts (
    attempt_id TEXT PRIMARY KEY,
    rollout_id TEXT NOT NULL,
    sequence_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    worker_id TEXT,
    start_time REAL NOT NULL,
    end_time REAL,
    last_heartbeat_time REAL,
    metadata TEXT NOT NULL,
    timeout_at REAL,
    unresponsive_seconds REAL,
    deadline REAL  -- when the active attempt times out or turns unresponsive, else NULL
);
CREATE UNIQUE INDEX attempts_by_rollout ON attempts(rollout_id, sequence_id);
CREATE INDEX attempts_deadline ON attempts(deadline) WHERE deadline IS NOT NULL;
CREATE TABLE spans (
    attempt_id TEXT NOT NULL,
    sequence_id INTEGER NOT NULL,
    span_id TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE UNIQUE INDEX spans_by_sequence ON spans(attempt_id, sequence_id);
CREATE UNIQUE INDEX spans_by_span_id ON spans(attempt_id, span_id);
"""


async def _file_of_schema_1(path: Path) -> tuple[str, list[str], list[agl.Span]]:
    """A store file as schema 1 left it: a rollout with two attempts (three spans, then two). Made by the current
    store, then its attempts and spans tables made again as schema 1 had them."""
    store = agl.SqliteStore(path)
    await store.enqueue_rollout("x", config=agl.RolloutConfig(max_attempts=2))
    first = await store.dequeue_rollout()
    assert first is not None
    await store.update_attempt(first.rollout_id, first.attempt.attempt_id, status=agl.AttemptStatus.FAILED)
    second = await store.dequeue_rollout()
    assert second is not None
    await store.close()
    rid, attempts = first.rollout_id, [first.attempt.attempt_id, second.attempt.attempt_id]
    spans = [make_span(rid, attempts[0], f"a1-{i}", index=i) for i in range(3)]
    spans += [make_span(rid, attempts[1], f"a2-{i}", index=i) for i in range(2)]
    conn = sqlite3.connect(path, isolation_level=None)
    columns = (
        "attempt_id, rollout_id, sequence_id, status, worker_id, start_time, end_time, last_heartbeat_time, "
        "metadata, timeout_at, unresponsive_seconds, deadline"
    )
    attempt_rows = conn.execute(f"SELECT {columns} FROM attempts ORDER BY span_key").fetchall()
    conn.execute("DROP TABLE attempts")
    conn.execute("DROP TABLE spans")
    conn.executescript(TABLES_1)
    conn.executemany(f"INSERT INTO attempts ({columns}) VALUES ({', '.join('?' * 12)})", attempt_rows)
    numbers = {aid: 0 for aid in attempts}
    for span in spans:
        numbers[span.attempt_id] += 1
        row = (span.attempt_id, numbers[span.attempt_id], span.span_id, EncodedSpan.of(span).json)
        conn.execute("INSERT INTO spans (attempt_id, sequence_id, span_id, data) VALUES (?, ?, ?, ?)", row)
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    return rid, attempts, spans


async def test_a_file_of_schema_1_opens_with_its_spans_and_takes_more(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "runs.db"
    rid, attempts, spans = await _file_of_schema_1(path)

    store = agl.SqliteStore(path)
    assert "from schema 1 to 2: rewriting its 5 spans" in caplog.text
    try:
        stored = await store.query_spans(rid)
        assert [(s.name, s.sequence_id) for s in stored] == [
            ("a1-0", 1),
            ("a1-1", 2),
            ("a1-2", 3),
            ("a2-0", 1),
            ("a2-1", 2),
        ]
        assert stored[0] == spans[0].model_copy(update={"sequence_id": 1})
        assert [s.name for s in await store.query_spans(rid, "latest")] == ["a2-0", "a2-1"]
        assert [s.name for s in await store.query_spans(rid, attempts[0])] == ["a1-0", "a1-1", "a1-2"]
        # New spans follow the attempt's last; one it already holds keeps its number.
        more = EncodedSpan.of(make_span(rid, attempts[1], "a2-2"))
        assert await store.add_encoded_spans([EncodedSpan.of(spans[4]), more]) == [2, 3]
        assert [s.name for s in await store.query_spans(rid, attempts[1])] == ["a2-0", "a2-1", "a2-2"]
        # A new attempt's spans are numbered from 1, apart from the others'.
        await store.update_attempt(rid, attempts[1], status=agl.AttemptStatus.FAILED)
        await store.enqueue_rollout("y")
        other = await store.dequeue_rollout()
        assert other is not None
        fresh = EncodedSpan.of(make_span(other.rollout_id, other.attempt.attempt_id, "b-0"))
        assert await store.add_encoded_spans([fresh]) == [1]
        assert (await store.statistics()).spans == 7
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()


async def test_reading_a_file_of_schema_1_asks_to_open_it_for_writing_once(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    await _file_of_schema_1(path)
    with pytest.raises(agl.StoreError, match=r"older Agent Lightning \(schema 1\).*open it once for writing"):
        agl.SqliteStore(path, read_only=True)
    # Nothing was changed by trying: it opens for writing, then read-only.
    writer = agl.SqliteStore(path)
    await writer.query_rollouts()
    await writer.close()
    reader = agl.SqliteStore(path, read_only=True)
    try:
        assert len(await reader.query_rollouts()) == 1
    finally:
        await reader.close()
