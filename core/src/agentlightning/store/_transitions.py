"""Attempts opening, showing signs of life and ending, in the SQLite store's rows (the rules are ``_lifecycle``'s).

Each function runs inside the database thread, in a transaction (see ``_database``). Whoever waits for a
rollout is woken through ``waiters`` once its ending is committed.
"""

from __future__ import annotations

import time

from agentlightning.store._database import Transaction
from agentlightning.store._lifecycle import attempt_deadline, expired_status, rollout_status_after_attempt
from agentlightning.store._schema import ATTEMPT_COLUMNS, AttemptRow, get_rollout, new_id, queue_front
from agentlightning.store._waiters import WaiterRegistry
from agentlightning.types import Attempt, AttemptedRollout, AttemptStatus, Rollout, RolloutStatus


def open_attempt(txn: Transaction, rollout: Rollout, worker_id: str | None, now: float) -> AttemptedRollout:
    config = rollout.config
    sequence_id = rollout.num_attempts + 1
    attempt_id = new_id("at")
    timeout_at = None if config.timeout_seconds is None else now + config.timeout_seconds
    deadline = attempt_deadline(timeout_at, config.unresponsive_seconds, now)
    txn.conn.execute(
        "INSERT INTO attempts (attempt_id, rollout_id, sequence_id, status, worker_id, start_time, "
        "last_heartbeat_time, metadata, timeout_at, unresponsive_seconds, deadline, span_key) "
        "VALUES (?, ?, ?, 'preparing', ?, ?, ?, '{}', ?, ?, ?, (SELECT COALESCE(MAX(span_key), 0) + 1 FROM attempts))",
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


def end_attempt(txn: Transaction, waiters: WaiterRegistry, row: AttemptRow, status: AttemptStatus, now: float) -> None:
    """End an active attempt; if it is the rollout's latest, the rollout ends, or is requeued, per its config."""
    attempt = row.attempt
    txn.conn.execute(
        "UPDATE attempts SET status = ?, end_time = ?, deadline = NULL WHERE attempt_id = ?",
        (status.value, now, attempt.attempt_id),
    )
    rollout_row = get_rollout(txn, attempt.rollout_id)
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
            (queue_front(txn), rollout.rollout_id),
        )
        txn.after_commit(waiters.notify_queued)
    else:
        finish_rollout(txn, waiters, rollout.rollout_id, after, now)


def finish_rollout(
    txn: Transaction, waiters: WaiterRegistry, rollout_id: str, status: RolloutStatus, now: float
) -> None:
    txn.conn.execute(
        "UPDATE rollouts SET status = ?, end_time = ?, queue_seq = NULL WHERE rollout_id = ?",
        (status.value, now, rollout_id),
    )
    txn.after_commit(lambda: waiters.notify((rollout_id,)))


def touch_attempt(txn: Transaction, row: AttemptRow, now: float, *, to_running: bool) -> None:
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


def end_expired_attempts(txn: Transaction, waiters: WaiterRegistry) -> float | None:
    """End every attempt past its deadline. Returns the seconds until the next deadline."""
    now = time.time()
    expired = txn.conn.execute(f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE deadline <= ?", (now,)).fetchall()
    for raw in expired:
        row = AttemptRow(raw)
        end_attempt(txn, waiters, row, expired_status(now, row.timeout_at), now)
    upcoming = txn.conn.execute("SELECT MIN(deadline) FROM attempts WHERE deadline IS NOT NULL").fetchone()[0]
    return None if upcoming is None else upcoming - now
