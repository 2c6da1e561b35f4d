"""The SQLite store's file: its connections and schema, the row types, and the lookups every operation shares.

The functions taking a :class:`Transaction` run inside the database thread (see ``_database``).
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import sqlite3
from pathlib import Path
from typing import Any

from agentlightning.errors import AttemptNotFound, RolloutNotFound, StoreError
from agentlightning.store._database import Transaction
from agentlightning.types import (
    Attempt,
    AttemptStatus,
    Rollout,
    RolloutConfig,
    RolloutMode,
    RolloutStatus,
)

log = logging.getLogger("agentlightning.store")

SCHEMA_VERSION = 2
# A span's row is keyed by its attempt's ``span_key`` and its sequence id in one integer (the attempt's spans are one
# range of keys): one B-tree holds the rows in order, and one index (on integers and the span id) keeps span ids
# unique per attempt. Two B-trees per span rather than three, on integers rather than attempt ids: a fifth less of
# the database's work per span written. (The SQL writes SEQUENCE_BITS as 32: an index on an expression serves only
# queries that spell it the same.)
SEQUENCE_BITS = 32
MAX_SEQUENCE_ID = (1 << SEQUENCE_BITS) - 1
SCHEMA = """
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
    deadline REAL,  -- when the active attempt times out or turns unresponsive, else NULL
    span_key INTEGER  -- the keys of its spans are span_key << 32 | sequence_id
);
CREATE UNIQUE INDEX IF NOT EXISTS attempts_span_key ON attempts(span_key);
CREATE UNIQUE INDEX IF NOT EXISTS attempts_by_rollout ON attempts(rollout_id, sequence_id);
CREATE INDEX IF NOT EXISTS attempts_deadline ON attempts(deadline) WHERE deadline IS NOT NULL;
CREATE TABLE IF NOT EXISTS spans (
    key INTEGER PRIMARY KEY,  -- the attempt's span_key << 32 | the span's sequence_id
    span_id TEXT NOT NULL,
    data TEXT NOT NULL  -- the span as JSON, without its sequence_id
);
CREATE UNIQUE INDEX IF NOT EXISTS spans_by_span_id ON spans(key >> 32, span_id);
CREATE TABLE IF NOT EXISTS resources (
    resources_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL UNIQUE,
    created_time REAL NOT NULL,
    data TEXT NOT NULL
);
"""


def connect(path: str, *, synchronous: str, read_only: bool) -> sqlite3.Connection:
    """The database thread's connection to the file at ``path``, its schema created or checked (unless read-only)."""
    if read_only:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    else:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    if read_only:
        version = _schema_version(conn, path)
        if version < SCHEMA_VERSION:
            conn.close()
            raise StoreError(
                f"{path!r} was written by an older Agent Lightning (schema {version}); open it once for writing "
                f"(e.g. agentlightning.open_store('sqlite:///{path}')) to upgrade it to schema {SCHEMA_VERSION}."
            )
        return conn
    # Spans are ~1 KB each: bigger pages mean fewer page writes per commit (takes effect on a new file).
    conn.execute("PRAGMA page_size = 16384")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA wal_autocheckpoint = 0")  # the Checkpointer does it, off the commit path
    version = _schema_version(conn, path)
    if version == 1:
        _upgrade_from_1(conn, path)
    conn.executescript(SCHEMA)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return conn


def _schema_version(conn: sqlite3.Connection, path: str) -> int:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path!r} was written by a newer Agent Lightning (schema {version}); upgrade agentlightning-core."
        )
    return version


def _upgrade_from_1(conn: sqlite3.Connection, path: str) -> None:
    """Rewrite a file of schema 1 (spans keyed by attempt id and sequence id, in two indexes) as schema 2, in one
    transaction: every attempt gets its ``span_key``, every span its key; nothing else changes."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] != 1:  # another connection upgraded it meanwhile
            conn.execute("COMMIT")
            return
        spans = conn.execute("SELECT COUNT(*) FROM spans").fetchone()[0]
        log.warning("Upgrading %s from schema 1 to %d: rewriting its %d spans, once.", path, SCHEMA_VERSION, spans)
        conn.execute("ALTER TABLE attempts ADD COLUMN span_key INTEGER")
        conn.execute("UPDATE attempts SET span_key = rowid")
        conn.execute("CREATE UNIQUE INDEX attempts_span_key ON attempts(span_key)")
        conn.execute("CREATE TABLE spans_2 (key INTEGER PRIMARY KEY, span_id TEXT NOT NULL, data TEXT NOT NULL)")
        conn.execute(
            "INSERT INTO spans_2 (key, span_id, data) SELECT (a.span_key << 32) | s.sequence_id, s.span_id, s.data "
            "FROM spans s JOIN attempts a ON a.attempt_id = s.attempt_id"
        )
        conn.execute("DROP TABLE spans")
        conn.execute("ALTER TABLE spans_2 RENAME TO spans")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def connect_checkpointer(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


ROLLOUT_COLUMNS = (
    "rollout_id, status, mode, resources_id, input, config, metadata, enqueue_time, start_time, end_time, "
    "num_attempts, latest_attempt_id"
)
ATTEMPT_COLUMNS = (
    "rollout_id, attempt_id, sequence_id, status, worker_id, start_time, end_time, last_heartbeat_time, metadata, "
    "timeout_at, unresponsive_seconds, span_key"
)


def dumps(value: Any) -> str:
    """``value`` (a rollout's input, metadata…) as the JSON the store keeps. NaN and the infinities, which JSON has
    no form for, are kept as ``null``, as the REST API writes them: the same value is read back in-process and over
    HTTP, and SQLite's JSON functions (``statistics()`` reads attempts' metadata with them) never meet a malformed
    document."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        if "Out of range float" not in str(exc):
            raise
        return json.dumps(_finite(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float inside it ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


class RolloutRow:
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


class AttemptRow:
    __slots__ = ("attempt", "span_key", "timeout_at", "unresponsive_seconds")

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
        self.span_key: int = row[11]

    @property
    def span_keys(self) -> tuple[int, int]:
        """The first and the last key of this attempt's spans."""
        first = self.span_key << SEQUENCE_BITS
        return first, first | MAX_SEQUENCE_ID


def get_rollout(txn: Transaction, rollout_id: str) -> RolloutRow:
    row = txn.conn.execute(f"SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE rollout_id = ?", (rollout_id,)).fetchone()
    if row is None:
        raise RolloutNotFound(rollout_id)
    return RolloutRow(row)


def get_attempt(txn: Transaction, rollout_id: str, attempt_id: str) -> AttemptRow:
    row = txn.conn.execute(f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE attempt_id = ?", (attempt_id,)).fetchone()
    if row is None or row[0] != rollout_id:
        if (
            row is None
            and txn.conn.execute("SELECT 1 FROM rollouts WHERE rollout_id = ?", (rollout_id,)).fetchone() is None
        ):
            raise RolloutNotFound(rollout_id)
        raise AttemptNotFound(rollout_id, attempt_id)
    return AttemptRow(row)


def queue_back(txn: Transaction) -> int:
    return int(
        txn.conn.execute("SELECT COALESCE(MAX(queue_seq), 0) + 1 FROM rollouts WHERE queue_seq IS NOT NULL").fetchone()[
            0
        ]
    )


def queue_front(txn: Transaction) -> int:
    return int(
        txn.conn.execute("SELECT COALESCE(MIN(queue_seq), 1) - 1 FROM rollouts WHERE queue_seq IS NOT NULL").fetchone()[
            0
        ]
    )
