"""The SQLite store: one file, durable across a crash of the process, the embedded default."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import JsonValue

from agentlightning.errors import (
    AttemptNotFound,
    InvalidStatusTransition,
    ResourcesNotFound,
    RolloutNotFound,
    StoreError,
)
from agentlightning.store._database import Checkpointer, Database, Transaction
from agentlightning.store._lifecycle import (
    ACTIVE_ATTEMPT_STATUSES,
    QUEUED_ROLLOUT_STATUSES,
    attempt_deadline,
    check_attempt_transition,
    check_rollout_transition,
    expired_status,
    rollout_status_after_attempt,
)
from agentlightning.store._waiters import Waiter, WaiterRegistry
from agentlightning.store.base import LightningStore, StoreStatistics
from agentlightning.types import (
    TERMINAL_ATTEMPT_STATUSES,
    TERMINAL_ROLLOUT_STATUSES,
    AnyResource,
    Attempt,
    AttemptedRollout,
    AttemptStatus,
    Resources,
    Rollout,
    RolloutConfig,
    RolloutMode,
    RolloutRequest,
    RolloutStatus,
    Span,
)
from agentlightning.types.resources import Resource

__all__ = ["SqliteStore"]

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    rollout_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    mode TEXT,
    resources_id TEXT,
    input TEXT NOT NULL,
    config TEXT NOT NULL,
    metadata TEXT NOT NULL,
    enqueue_time REAL NOT NULL,
    start_time REAL,
    end_time REAL,
    num_attempts INTEGER NOT NULL DEFAULT 0,
    latest_attempt_id TEXT,
    queue_seq INTEGER  -- position in the queue while queuing / requeuing, else NULL
);
CREATE INDEX IF NOT EXISTS rollouts_queue ON rollouts(queue_seq) WHERE queue_seq IS NOT NULL;
CREATE INDEX IF NOT EXISTS rollouts_status ON rollouts(status);
CREATE TABLE IF NOT EXISTS attempts (
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
CREATE UNIQUE INDEX IF NOT EXISTS attempts_by_rollout ON attempts(rollout_id, sequence_id);
CREATE INDEX IF NOT EXISTS attempts_deadline ON attempts(deadline) WHERE deadline IS NOT NULL;
CREATE TABLE IF NOT EXISTS spans (
    attempt_id TEXT NOT NULL,
    sequence_id INTEGER NOT NULL,
    span_id TEXT NOT NULL,
    data TEXT NOT NULL  -- the span as JSON, without its sequence_id
);
CREATE UNIQUE INDEX IF NOT EXISTS spans_by_sequence ON spans(attempt_id, sequence_id);
CREATE UNIQUE INDEX IF NOT EXISTS spans_by_span_id ON spans(attempt_id, span_id);
CREATE TABLE IF NOT EXISTS resources (
    resources_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL UNIQUE,
    created_time REAL NOT NULL,
    data TEXT NOT NULL
);
"""

_ROLLOUT_COLUMNS = (
    "rollout_id, status, mode, resources_id, input, config, metadata, enqueue_time, start_time, end_time, "
    "num_attempts, latest_attempt_id"
)
_ATTEMPT_COLUMNS = (
    "rollout_id, attempt_id, sequence_id, status, worker_id, start_time, end_time, last_heartbeat_time, metadata, "
    "timeout_at, unresponsive_seconds"
)
_SPAN_JSON_EXCLUDE = {"sequence_id"}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


class _RolloutRow:
    """A rollouts row, with the columns the model does not show."""

    __slots__ = ("latest_attempt_id", "rollout")

    def __init__(self, row: tuple[Any, ...]) -> None:
        self.rollout = Rollout(
            rollout_id=row[0],
            status=RolloutStatus(row[1]),
            mode=None if row[2] is None else RolloutMode(row[2]),
            resources_id=row[3],
            input=json.loads(row[4]),
            config=RolloutConfig.model_validate_json(row[5]),
            metadata=json.loads(row[6]),
            enqueue_time=row[7],
            start_time=row[8],
            end_time=row[9],
            num_attempts=row[10],
        )
        self.latest_attempt_id: str | None = row[11]


class _AttemptRow:
    __slots__ = ("attempt", "timeout_at", "unresponsive_seconds")

    def __init__(self, row: tuple[Any, ...]) -> None:
        self.attempt = Attempt(
            rollout_id=row[0],
            attempt_id=row[1],
            sequence_id=row[2],
            status=AttemptStatus(row[3]),
            worker_id=row[4],
            start_time=row[5],
            end_time=row[6],
            last_heartbeat_time=row[7],
            metadata=json.loads(row[8]),
        )
        self.timeout_at: float | None = row[9]
        self.unresponsive_seconds: float | None = row[10]


class SqliteStore(LightningStore):
    """A store kept in one SQLite file (WAL mode), or in memory with ``path=":memory:"``.

    One process should own the file: other processes reach it through the store server
    (``agl store serve``). Every write is acknowledged only once committed, so it survives a crash
    of the process; ``synchronous="FULL"`` makes it survive a power loss too, at some cost in speed.
    Attempts past their deadline are ended by a background thread within ``sweep_interval`` seconds.
    ``read_only=True`` opens an existing file for reading only (e.g. from the CLI while a server runs).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "runs.db",
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        sweep_interval: float = 1.0,
        read_only: bool = False,
    ) -> None:
        self.path = str(path)
        self._read_only = read_only
        self._waiters = WaiterRegistry()
        if read_only and not (self.path != ":memory:" and Path(self.path).exists()):
            raise StoreError(f"No store file at {self.path!r} to open read-only.")
        self._db = Database(
            lambda: self._connect(synchronous),
            idle=None if read_only else self._sweep,
            max_idle_interval=sweep_interval,
            write=not read_only,
        )
        self._checkpointer = None if read_only or self.path == ":memory:" else Checkpointer(self._connect_checkpointer)

    def _connect_checkpointer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        return conn

    def _connect(self, synchronous: str) -> sqlite3.Connection:
        if self._read_only:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
        else:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        if self._read_only:
            return conn
        # Spans are ~1 KB each: bigger pages mean fewer page writes per commit (takes effect on a new file).
        conn.execute("PRAGMA page_size = 16384")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # the Checkpointer does it, off the commit path
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > _SCHEMA_VERSION:
            raise StoreError(
                f"{self.path!r} was written by a newer Agent Lightning (schema {version}); upgrade agentlightning-core."
            )
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        return conn

    async def close(self) -> None:
        self._db.close()
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None

    # --- helpers run inside the database thread ---------------------------------------------
    @staticmethod
    def _get_rollout(txn: Transaction, rollout_id: str) -> _RolloutRow:
        row = txn.conn.execute(
            f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts WHERE rollout_id = ?", (rollout_id,)
        ).fetchone()
        if row is None:
            raise RolloutNotFound(rollout_id)
        return _RolloutRow(row)

    @staticmethod
    def _get_attempt(txn: Transaction, rollout_id: str, attempt_id: str) -> _AttemptRow:
        row = txn.conn.execute(
            f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE attempt_id = ?", (attempt_id,)
        ).fetchone()
        if row is None or row[0] != rollout_id:
            if (
                row is None
                and txn.conn.execute("SELECT 1 FROM rollouts WHERE rollout_id = ?", (rollout_id,)).fetchone() is None
            ):
                raise RolloutNotFound(rollout_id)
            raise AttemptNotFound(rollout_id, attempt_id)
        return _AttemptRow(row)

    @staticmethod
    def _queue_back(txn: Transaction) -> int:
        return int(
            txn.conn.execute(
                "SELECT COALESCE(MAX(queue_seq), 0) + 1 FROM rollouts WHERE queue_seq IS NOT NULL"
            ).fetchone()[0]
        )

    @staticmethod
    def _queue_front(txn: Transaction) -> int:
        return int(
            txn.conn.execute(
                "SELECT COALESCE(MIN(queue_seq), 1) - 1 FROM rollouts WHERE queue_seq IS NOT NULL"
            ).fetchone()[0]
        )

    def _open_attempt(self, txn: Transaction, rollout: Rollout, worker_id: str | None, now: float) -> AttemptedRollout:
        config = rollout.config
        sequence_id = rollout.num_attempts + 1
        attempt_id = _new_id("at")
        timeout_at = None if config.timeout_seconds is None else now + config.timeout_seconds
        deadline = attempt_deadline(timeout_at, config.unresponsive_seconds, now)
        txn.conn.execute(
            "INSERT INTO attempts (attempt_id, rollout_id, sequence_id, status, worker_id, start_time, "
            "last_heartbeat_time, metadata, timeout_at, unresponsive_seconds, deadline) "
            "VALUES (?, ?, ?, 'preparing', ?, ?, ?, '{}', ?, ?, ?)",
            (
                attempt_id,
                rollout.rollout_id,
                sequence_id,
                worker_id,
                now,
                now,
                timeout_at,
                config.unresponsive_seconds,
                deadline,
            ),
        )
        start_time = rollout.start_time if rollout.start_time is not None else now
        txn.conn.execute(
            "UPDATE rollouts SET status = 'preparing', queue_seq = NULL, num_attempts = ?, latest_attempt_id = ?, "
            "start_time = ?, end_time = NULL WHERE rollout_id = ?",
            (sequence_id, attempt_id, start_time, rollout.rollout_id),
        )
        attempt = Attempt(
            rollout_id=rollout.rollout_id,
            attempt_id=attempt_id,
            sequence_id=sequence_id,
            status=AttemptStatus.PREPARING,
            worker_id=worker_id,
            start_time=now,
            last_heartbeat_time=now,
        )
        fields = rollout.model_dump(exclude={"status", "num_attempts", "start_time", "end_time"})
        return AttemptedRollout(
            **fields,
            status=RolloutStatus.PREPARING,
            num_attempts=sequence_id,
            start_time=start_time,
            end_time=None,
            attempt=attempt,
        )

    def _end_attempt(self, txn: Transaction, row: _AttemptRow, status: AttemptStatus, now: float) -> None:
        """End an active attempt; if it is the rollout's latest, the rollout ends, or is requeued, per its config."""
        attempt = row.attempt
        txn.conn.execute(
            "UPDATE attempts SET status = ?, end_time = ?, deadline = NULL WHERE attempt_id = ?",
            (status.value, now, attempt.attempt_id),
        )
        rollout_row = self._get_rollout(txn, attempt.rollout_id)
        rollout = rollout_row.rollout
        if rollout_row.latest_attempt_id != attempt.attempt_id or rollout.status not in (
            RolloutStatus.PREPARING,
            RolloutStatus.RUNNING,
        ):
            return
        after = rollout_status_after_attempt(rollout.config, status, rollout.num_attempts)
        if after == RolloutStatus.REQUEUING:
            txn.conn.execute(
                "UPDATE rollouts SET status = 'requeuing', queue_seq = ? WHERE rollout_id = ?",
                (self._queue_front(txn), rollout.rollout_id),
            )
        else:
            self._finish_rollout(txn, rollout.rollout_id, after, now)

    def _finish_rollout(self, txn: Transaction, rollout_id: str, status: RolloutStatus, now: float) -> None:
        txn.conn.execute(
            "UPDATE rollouts SET status = ?, end_time = ?, queue_seq = NULL WHERE rollout_id = ?",
            (status.value, now, rollout_id),
        )
        txn.after_commit(lambda: self._waiters.notify((rollout_id,)))

    def _touch(self, txn: Transaction, row: _AttemptRow, now: float, *, to_running: bool) -> None:
        """Record that an active attempt's worker is alive; optionally move a preparing attempt to running."""
        attempt = row.attempt
        deadline = attempt_deadline(row.timeout_at, row.unresponsive_seconds, now)
        running = to_running and attempt.status == AttemptStatus.PREPARING
        txn.conn.execute(
            "UPDATE attempts SET last_heartbeat_time = ?, deadline = ?, status = ? WHERE attempt_id = ?",
            (now, deadline, AttemptStatus.RUNNING.value if running else attempt.status.value, attempt.attempt_id),
        )
        if running:
            txn.conn.execute(
                "UPDATE rollouts SET status = 'running' WHERE rollout_id = ? AND latest_attempt_id = ? "
                "AND status = 'preparing'",
                (attempt.rollout_id, attempt.attempt_id),
            )

    def _sweep(self, txn: Transaction) -> float | None:
        """End every attempt past its deadline. Returns the seconds until the next deadline."""
        now = time.time()
        expired = txn.conn.execute(f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE deadline <= ?", (now,)).fetchall()
        for raw in expired:
            row = _AttemptRow(raw)
            self._end_attempt(txn, row, expired_status(now, row.timeout_at), now)
        upcoming = txn.conn.execute("SELECT MIN(deadline) FROM attempts WHERE deadline IS NOT NULL").fetchone()[0]
        return None if upcoming is None else upcoming - now

    # --- queue -------------------------------------------------------------------------------
    async def enqueue_many_rollouts(self, requests: Sequence[RolloutRequest]) -> list[Rollout]:
        requests = list(requests)

        def op(txn: Transaction) -> list[Rollout]:
            now = time.time()
            back = self._queue_back(txn)
            rollouts = [
                Rollout(
                    rollout_id=_new_id("ro"),
                    input=r.input,
                    mode=r.mode,
                    resources_id=r.resources_id,
                    status=RolloutStatus.QUEUING,
                    config=r.config,
                    metadata=r.metadata,
                    enqueue_time=now,
                )
                for r in requests
            ]
            txn.conn.executemany(
                "INSERT INTO rollouts (rollout_id, status, mode, resources_id, input, config, metadata, "
                "enqueue_time, queue_seq) VALUES (?, 'queuing', ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.rollout_id,
                        None if r.mode is None else r.mode.value,
                        r.resources_id,
                        _dumps(r.input),
                        r.config.model_dump_json(),
                        _dumps(r.metadata),
                        now,
                        back + i,
                    )
                    for i, r in enumerate(rollouts)
                ],
            )
            return rollouts

        return await self._db.run(op)

    async def dequeue_rollout(self, worker_id: str | None = None) -> AttemptedRollout | None:
        def op(txn: Transaction) -> AttemptedRollout | None:
            row = txn.conn.execute(
                f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts WHERE queue_seq IS NOT NULL ORDER BY queue_seq LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            return self._open_attempt(txn, _RolloutRow(row).rollout, worker_id, time.time())

        return await self._db.run(op)

    async def start_rollout(self, request: RolloutRequest, worker_id: str | None = None) -> AttemptedRollout:
        def op(txn: Transaction) -> AttemptedRollout:
            now = time.time()
            rollout = Rollout(
                rollout_id=_new_id("ro"),
                input=request.input,
                mode=request.mode,
                resources_id=request.resources_id,
                status=RolloutStatus.PREPARING,
                config=request.config,
                metadata=request.metadata,
                enqueue_time=now,
            )
            txn.conn.execute(
                "INSERT INTO rollouts (rollout_id, status, mode, resources_id, input, config, metadata, enqueue_time) "
                "VALUES (?, 'preparing', ?, ?, ?, ?, ?, ?)",
                (
                    rollout.rollout_id,
                    None if rollout.mode is None else rollout.mode.value,
                    rollout.resources_id,
                    _dumps(rollout.input),
                    rollout.config.model_dump_json(),
                    _dumps(rollout.metadata),
                    now,
                ),
            )
            return self._open_attempt(txn, rollout, worker_id, now)

        return await self._db.run(op)

    async def start_attempt(self, rollout_id: str, worker_id: str | None = None) -> AttemptedRollout:
        def op(txn: Transaction) -> AttemptedRollout:
            row = self._get_rollout(txn, rollout_id)
            if row.latest_attempt_id is not None:
                latest = self._get_attempt(txn, rollout_id, row.latest_attempt_id).attempt
                if latest.status in ACTIVE_ATTEMPT_STATUSES:
                    raise InvalidStatusTransition(
                        f"Rollout {rollout_id!r} still has an active attempt {latest.attempt_id!r} "
                        f"({latest.status.value}); end or cancel it before starting another."
                    )
            return self._open_attempt(txn, row.rollout, worker_id, time.time())

        return await self._db.run(op)

    # --- attempts ----------------------------------------------------------------------------
    async def update_attempt(
        self,
        rollout_id: str,
        attempt_id: str,
        *,
        status: AttemptStatus | None = None,
        worker_id: str | None = None,
        metadata: dict[str, JsonValue] | None = None,
    ) -> Attempt:
        def op(txn: Transaction) -> Attempt:
            now = time.time()
            row = self._get_attempt(txn, rollout_id, attempt_id)
            if worker_id is not None:
                txn.conn.execute("UPDATE attempts SET worker_id = ? WHERE attempt_id = ?", (worker_id, attempt_id))
            if metadata is not None:
                txn.conn.execute(
                    "UPDATE attempts SET metadata = ? WHERE attempt_id = ?", (_dumps(metadata), attempt_id)
                )
            if status is not None and check_attempt_transition(attempt_id, row.attempt.status, status):
                if status in TERMINAL_ATTEMPT_STATUSES:
                    self._end_attempt(txn, row, status, now)
                else:
                    self._touch(txn, row, now, to_running=True)
            elif row.attempt.status in ACTIVE_ATTEMPT_STATUSES:
                self._touch(txn, row, now, to_running=False)
            return self._get_attempt(txn, rollout_id, attempt_id).attempt

        return await self._db.run(op)

    async def heartbeat(self, rollout_id: str, attempt_id: str) -> Attempt:
        def op(txn: Transaction) -> Attempt:
            row = self._get_attempt(txn, rollout_id, attempt_id)
            if row.attempt.status in ACTIVE_ATTEMPT_STATUSES:
                now = time.time()
                self._touch(txn, row, now, to_running=False)
                row.attempt.last_heartbeat_time = now
            return row.attempt

        return await self._db.run(op)

    async def query_attempts(self, rollout_id: str) -> list[Attempt]:
        def op(txn: Transaction) -> list[Attempt]:
            self._get_rollout(txn, rollout_id)
            rows = txn.conn.execute(
                f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE rollout_id = ? ORDER BY sequence_id", (rollout_id,)
            ).fetchall()
            return [_AttemptRow(r).attempt for r in rows]

        return await self._db.run(op)

    # --- rollouts ----------------------------------------------------------------------------
    async def get_rollout_by_id(self, rollout_id: str) -> Rollout:
        return await self._db.run(lambda txn: self._get_rollout(txn, rollout_id).rollout)

    async def query_rollouts(
        self,
        *,
        status: Sequence[RolloutStatus] | None = None,
        rollout_ids: Sequence[str] | None = None,
        mode: RolloutMode | None = None,
        limit: int | None = None,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[Rollout]:
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            where.append(f"status IN ({','.join('?' * len(status))})")
            params.extend(RolloutStatus(s).value for s in status)
        if rollout_ids is not None:
            where.append("rollout_id IN (SELECT value FROM json_each(?))")
            params.append(_dumps(list(rollout_ids)))
        if mode is not None:
            where.append("mode = ?")
            params.append(RolloutMode(mode).value)
        sql = f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY rowid DESC" if newest_first else " ORDER BY rowid"
        sql += " LIMIT ? OFFSET ?"
        params.extend([-1 if limit is None else limit, offset])
        return await self._db.run(lambda txn: [_RolloutRow(r).rollout for r in txn.conn.execute(sql, params)])

    async def update_rollout(
        self,
        rollout_id: str,
        *,
        status: RolloutStatus | None = None,
        mode: RolloutMode | None = None,
        resources_id: str | None = None,
        config: RolloutConfig | None = None,
        metadata: dict[str, JsonValue] | None = None,
    ) -> Rollout:
        def op(txn: Transaction) -> Rollout:
            now = time.time()
            row = self._get_rollout(txn, rollout_id)
            changes: dict[str, Any] = {}
            if mode is not None:
                changes["mode"] = RolloutMode(mode).value
            if resources_id is not None:
                changes["resources_id"] = resources_id
            if config is not None:
                changes["config"] = config.model_dump_json()
            if metadata is not None:
                changes["metadata"] = _dumps(metadata)
            if changes:
                assignments = ", ".join(f"{column} = ?" for column in changes)
                txn.conn.execute(
                    f"UPDATE rollouts SET {assignments} WHERE rollout_id = ?", [*changes.values(), rollout_id]
                )
            if status is not None and check_rollout_transition(rollout_id, row.rollout.status, status):
                if status == RolloutStatus.QUEUING:
                    if row.rollout.status not in QUEUED_ROLLOUT_STATUSES:
                        txn.conn.execute(
                            "UPDATE rollouts SET status = 'queuing', end_time = NULL, queue_seq = ? WHERE rollout_id = ?",
                            (self._queue_back(txn), rollout_id),
                        )
                    else:
                        txn.conn.execute("UPDATE rollouts SET status = 'queuing' WHERE rollout_id = ?", (rollout_id,))
                else:
                    if row.latest_attempt_id is not None:
                        latest = self._get_attempt(txn, rollout_id, row.latest_attempt_id)
                        if latest.attempt.status in ACTIVE_ATTEMPT_STATUSES:
                            txn.conn.execute(
                                "UPDATE attempts SET status = ?, end_time = ?, deadline = NULL WHERE attempt_id = ?",
                                (AttemptStatus(status.value).value, now, latest.attempt.attempt_id),
                            )
                    self._finish_rollout(txn, rollout_id, status, now)
            return self._get_rollout(txn, rollout_id).rollout

        return await self._db.run(op)

    async def wait_for_rollouts(self, rollout_ids: Sequence[str], timeout: float | None = None) -> list[Rollout]:
        ids = list(dict.fromkeys(rollout_ids))
        terminal = [s.value for s in TERMINAL_ROLLOUT_STATUSES]

        def op(txn: Transaction) -> list[Rollout]:
            rows = {
                r[0]: r
                for r in txn.conn.execute(
                    f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts WHERE rollout_id IN (SELECT value FROM json_each(?))",
                    (_dumps(ids),),
                )
            }
            for rollout_id in ids:
                if rollout_id not in rows:
                    raise RolloutNotFound(rollout_id)
            return [_RolloutRow(rows[rid]).rollout for rid in ids if rows[rid][1] in terminal]

        waiter = Waiter(ids)
        self._waiters.add(waiter)
        try:
            loop = asyncio.get_running_loop()
            deadline = None if timeout is None else loop.time() + timeout
            while True:
                waiter.event.clear()
                finished = await self._db.run(op)
                remaining = None if deadline is None else deadline - loop.time()
                if len(finished) == len(ids) or (remaining is not None and remaining <= 0):
                    return finished
                try:
                    await asyncio.wait_for(waiter.event.wait(), remaining)
                except TimeoutError:
                    pass
        finally:
            self._waiters.remove(waiter)

    # --- spans -------------------------------------------------------------------------------
    async def add_many_spans(self, spans: Sequence[Span]) -> list[Span]:
        spans = list(spans)
        return _numbered(spans, await self._db.run(self._add_spans_op(spans)))

    async def submit_spans(self, spans: Sequence[Span]) -> asyncio.Future[list[Span]]:
        spans = list(spans)
        written = self._db.submit(self._add_spans_op(spans))  # queued: ordered before any later operation
        return asyncio.ensure_future(_numbered_when_written(spans, written))

    def _add_spans_op(self, spans: list[Span]) -> Callable[[Transaction], list[int]]:
        payloads = [span.model_dump_json(exclude=_SPAN_JSON_EXCLUDE) for span in spans]

        def op(txn: Transaction) -> list[int]:
            now = time.time()
            by_attempt: dict[str, list[int]] = {}
            for index, span in enumerate(spans):
                by_attempt.setdefault(span.attempt_id, []).append(index)
            sequence_ids = [0] * len(spans)
            rows = []
            for attempt_id, indices in by_attempt.items():
                row = self._get_attempt(txn, spans[indices[0]].rollout_id, attempt_id)
                for index in indices[1:]:
                    if spans[index].rollout_id != row.attempt.rollout_id:
                        raise AttemptNotFound(spans[index].rollout_id, attempt_id)
                next_id = txn.conn.execute(
                    "SELECT COALESCE(MAX(sequence_id), 0) + 1 FROM spans WHERE attempt_id = ?", (attempt_id,)
                ).fetchone()[0]
                # Spans already stored (a resent batch) keep their number; an attempt without spans has none.
                known: dict[str, int] = {}
                if next_id > 1:
                    known = dict(
                        txn.conn.execute(
                            "SELECT span_id, sequence_id FROM spans WHERE attempt_id = ? "
                            "AND span_id IN (SELECT value FROM json_each(?))",
                            (attempt_id, _dumps([spans[i].span_id for i in indices])),
                        ).fetchall()
                    )
                for index in indices:
                    span = spans[index]
                    if span.span_id in known:
                        sequence_ids[index] = known[span.span_id]
                        continue
                    if span.sequence_id is None:
                        sequence_id = next_id
                        next_id += 1
                    else:
                        sequence_id = span.sequence_id
                        next_id = max(next_id, sequence_id + 1)
                    known[span.span_id] = sequence_ids[index] = sequence_id
                    rows.append((attempt_id, sequence_id, span.span_id, payloads[index]))
                if row.attempt.status in ACTIVE_ATTEMPT_STATUSES:
                    self._touch(txn, row, now, to_running=True)
            txn.conn.executemany("INSERT INTO spans (attempt_id, sequence_id, span_id, data) VALUES (?, ?, ?, ?)", rows)
            return sequence_ids

        return op

    def _span_rows(self, txn: Transaction, rollout_id: str, attempt_id: str | None) -> list[tuple[str, int]]:
        row = self._get_rollout(txn, rollout_id)
        if attempt_id == "latest":
            attempt_id = row.latest_attempt_id
            if attempt_id is None:
                return []
        if attempt_id is not None:
            self._get_attempt(txn, rollout_id, attempt_id)
            return txn.conn.execute(
                "SELECT data, sequence_id FROM spans WHERE attempt_id = ? ORDER BY sequence_id", (attempt_id,)
            ).fetchall()
        return txn.conn.execute(
            "SELECT s.data, s.sequence_id FROM spans s JOIN attempts a ON a.attempt_id = s.attempt_id "
            "WHERE a.rollout_id = ? ORDER BY a.sequence_id, s.sequence_id",
            (rollout_id,),
        ).fetchall()

    async def query_spans(self, rollout_id: str, attempt_id: str | Literal["latest"] | None = None) -> list[Span]:
        rows = await self._db.run(lambda txn: self._span_rows(txn, rollout_id, attempt_id))
        spans = []
        for data, sequence_id in rows:
            span = Span.model_validate_json(data)
            span.sequence_id = sequence_id
            spans.append(span)
        return spans

    async def query_spans_json(self, rollout_id: str, attempt_id: str | None = None) -> str:
        """The spans of :meth:`query_spans` as one JSON array, without parsing them (for the server)."""
        rows = await self._db.run(lambda txn: self._span_rows(txn, rollout_id, attempt_id))
        return "[" + ",".join(f'{{"sequence_id":{seq},{data[1:]}' for data, seq in rows) + "]"

    # --- resources ---------------------------------------------------------------------------
    async def add_resources(self, resources: Mapping[str, AnyResource], resources_id: str | None = None) -> Resources:
        for name, value in resources.items():
            if not isinstance(value, Resource):
                raise StoreError(
                    f"Resource {name!r} is a {type(value).__name__}; pass an agl.LLM, agl.PromptTemplate or other agl.Resource."
                )

        def op(txn: Transaction) -> Resources:
            version = txn.conn.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM resources").fetchone()[0]
            published = Resources(
                resources_id=resources_id or _new_id("rs"),
                version=version,
                created_time=time.time(),
                resources=dict(resources),
            )
            txn.conn.execute(
                "INSERT INTO resources (resources_id, version, created_time, data) VALUES (?, ?, ?, ?)",
                (published.resources_id, version, published.created_time, published.model_dump_json()),
            )
            return published

        return await self._db.run(op)

    async def get_resources_by_id(self, resources_id: str) -> Resources:
        def op(txn: Transaction) -> Resources:
            row = txn.conn.execute("SELECT data FROM resources WHERE resources_id = ?", (resources_id,)).fetchone()
            if row is None:
                raise ResourcesNotFound(f"No resources version with id {resources_id!r} in this store.")
            return Resources.model_validate_json(row[0])

        return await self._db.run(op)

    async def get_latest_resources(self) -> Resources | None:
        def op(txn: Transaction) -> Resources | None:
            row = txn.conn.execute("SELECT data FROM resources ORDER BY version DESC LIMIT 1").fetchone()
            return None if row is None else Resources.model_validate_json(row[0])

        return await self._db.run(op)

    # --- misc --------------------------------------------------------------------------------
    async def statistics(self) -> StoreStatistics:
        def op(txn: Transaction) -> StoreStatistics:
            conn = txn.conn
            rollouts = {
                RolloutStatus(s): n for s, n in conn.execute("SELECT status, COUNT(*) FROM rollouts GROUP BY status")
            }
            attempts = {
                AttemptStatus(s): n for s, n in conn.execute("SELECT status, COUNT(*) FROM attempts GROUP BY status")
            }
            return StoreStatistics(
                rollouts={s: rollouts.get(s, 0) for s in RolloutStatus},
                attempts={s: attempts.get(s, 0) for s in AttemptStatus},
                spans=conn.execute("SELECT COUNT(*) FROM spans").fetchone()[0],
                resources_versions=conn.execute("SELECT COUNT(*) FROM resources").fetchone()[0],
                queue_length=conn.execute("SELECT COUNT(*) FROM rollouts WHERE queue_seq IS NOT NULL").fetchone()[0],
                spans_dropped=conn.execute(
                    "SELECT COALESCE(SUM(json_extract(metadata, '$.spans_dropped')), 0) FROM attempts "
                    "WHERE json_extract(metadata, '$.spans_dropped') IS NOT NULL"
                ).fetchone()[0],
            )

        return await self._db.run(op)


def _numbered(spans: list[Span], sequence_ids: list[int]) -> list[Span]:
    for span, sequence_id in zip(spans, sequence_ids, strict=True):
        span.sequence_id = sequence_id
    return spans


async def _numbered_when_written(spans: list[Span], written: asyncio.Future[list[int]]) -> list[Span]:
    return _numbered(spans, await written)
