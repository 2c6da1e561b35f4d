"""The SQLite store: one file, durable across a crash of the process, the embedded default."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import JsonValue

from agentlightning.errors import InvalidStatusTransition, RolloutNotFound, StoreError
from agentlightning.store._database import Checkpointer, Database, Transaction
from agentlightning.store._lifecycle import (
    ACTIVE_ATTEMPT_STATUSES,
    QUEUED_ROLLOUT_STATUSES,
    check_attempt_transition,
    check_rollout_transition,
)
from agentlightning.store._records import (
    add_parsed_spans_op,
    add_spans_op,
    check_resources,
    get_latest_resources,
    get_resources,
    insert_resources,
    numbered,
    numbered_when_written,
    span_rows,
    spans_json_of_rows,
    spans_of_rows,
)
from agentlightning.store._schema import (
    ATTEMPT_COLUMNS,
    ROLLOUT_COLUMNS,
    AttemptRow,
    RolloutRow,
    connect,
    connect_checkpointer,
    dumps,
    get_attempt,
    get_rollout,
    new_id,
    queue_back,
)
from agentlightning.store._transitions import (
    end_attempt,
    end_expired_attempts,
    finish_rollout,
    open_attempt,
    touch_attempt,
)
from agentlightning.store._waiters import Waiter, WaiterRegistry
from agentlightning.store.base import EncodedSpan, LightningStore, StoreStatistics, check_dequeue_arguments
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

__all__ = ["SqliteStore"]

T = TypeVar("T")


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
        self._waiters = WaiterRegistry()
        if read_only and not (self.path != ":memory:" and Path(self.path).exists()):
            raise StoreError(f"No store file at {self.path!r} to open read-only.")
        self._db = Database(
            lambda: connect(self.path, synchronous=synchronous, read_only=read_only),
            idle=None if read_only else lambda txn: end_expired_attempts(txn, self._waiters),
            max_idle_interval=sweep_interval,
            write=not read_only,
        )
        self._checkpointer = (
            None if read_only or self.path == ":memory:" else Checkpointer(lambda: connect_checkpointer(self.path))
        )

    async def close(self) -> None:
        self._db.close()
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None

    # --- queue -------------------------------------------------------------------------------
    async def enqueue_many_rollouts(self, requests: Sequence[RolloutRequest]) -> list[Rollout]:
        requests = list(requests)

        def op(txn: Transaction) -> list[Rollout]:
            now = time.time()
            back = queue_back(txn)
            rollouts = [
                Rollout(
                    rollout_id=new_id("ro"),
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
                        dumps(r.input),
                        r.config.model_dump_json(),
                        dumps(r.metadata),
                        now,
                        back + i,
                    )
                    for i, r in enumerate(rollouts)
                ],
            )
            txn.after_commit(self._waiters.notify_queued)
            return rollouts

        return await self._db.run(op)

    async def dequeue_rollout(self, worker_id: str | None = None) -> AttemptedRollout | None:
        got = await self._db.run(self._dequeue_op(1, worker_id))
        return got[0] if got else None

    async def dequeue_many_rollouts(
        self, limit: int, worker_id: str | None = None, *, wait: float = 0.0
    ) -> list[AttemptedRollout]:
        check_dequeue_arguments(limit, wait)
        op = self._dequeue_op(limit, worker_id)
        waiter = Waiter()
        self._waiters.watch_queue(waiter)  # before looking, so a rollout queued in between still wakes it
        try:
            return await self._look_until(waiter, op, bool, wait)
        finally:
            self._waiters.unwatch_queue(waiter)

    @staticmethod
    def _dequeue_op(limit: int, worker_id: str | None) -> Callable[[Transaction], list[AttemptedRollout]]:
        def op(txn: Transaction) -> list[AttemptedRollout]:
            rows = txn.conn.execute(
                f"SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE queue_seq IS NOT NULL ORDER BY queue_seq LIMIT ?",
                (limit,),
            ).fetchall()
            now = time.time()
            return [open_attempt(txn, RolloutRow(row).rollout, worker_id, now) for row in rows]

        return op

    async def start_rollout(self, request: RolloutRequest, worker_id: str | None = None) -> AttemptedRollout:
        def op(txn: Transaction) -> AttemptedRollout:
            now = time.time()
            rollout = Rollout(
                rollout_id=new_id("ro"),
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
                    dumps(rollout.input),
                    rollout.config.model_dump_json(),
                    dumps(rollout.metadata),
                    now,
                ),
            )
            return open_attempt(txn, rollout, worker_id, now)

        return await self._db.run(op)

    async def start_attempt(self, rollout_id: str, worker_id: str | None = None) -> AttemptedRollout:
        def op(txn: Transaction) -> AttemptedRollout:
            row = get_rollout(txn, rollout_id)
            if row.latest_attempt_id is not None:
                latest = get_attempt(txn, rollout_id, row.latest_attempt_id).attempt
                if latest.status in ACTIVE_ATTEMPT_STATUSES:
                    raise InvalidStatusTransition(
                        f"Rollout {rollout_id!r} still has an active attempt {latest.attempt_id!r} "
                        f"({latest.status.value}); end or cancel it before starting another."
                    )
            return open_attempt(txn, row.rollout, worker_id, time.time())

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
            row = get_attempt(txn, rollout_id, attempt_id)
            if worker_id is not None:
                txn.conn.execute("UPDATE attempts SET worker_id = ? WHERE attempt_id = ?", (worker_id, attempt_id))
            if metadata is not None:
                txn.conn.execute("UPDATE attempts SET metadata = ? WHERE attempt_id = ?", (dumps(metadata), attempt_id))
            if status is not None and check_attempt_transition(attempt_id, row.attempt.status, status):
                if status in TERMINAL_ATTEMPT_STATUSES:
                    end_attempt(txn, self._waiters, row, status, now)
                else:
                    touch_attempt(txn, row, now, to_running=True)
            elif row.attempt.status in ACTIVE_ATTEMPT_STATUSES:
                touch_attempt(txn, row, now, to_running=False)
            return get_attempt(txn, rollout_id, attempt_id).attempt

        return await self._db.run(op)

    async def heartbeat(self, rollout_id: str, attempt_id: str) -> Attempt:
        def op(txn: Transaction) -> Attempt:
            row = get_attempt(txn, rollout_id, attempt_id)
            if row.attempt.status in ACTIVE_ATTEMPT_STATUSES:
                now = time.time()
                touch_attempt(txn, row, now, to_running=False)
                row.attempt.last_heartbeat_time = now
            return row.attempt

        return await self._db.run(op)

    async def query_attempts(self, rollout_id: str) -> list[Attempt]:
        def op(txn: Transaction) -> list[Attempt]:
            get_rollout(txn, rollout_id)
            rows = txn.conn.execute(
                f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE rollout_id = ? ORDER BY sequence_id", (rollout_id,)
            ).fetchall()
            return [AttemptRow(r).attempt for r in rows]

        return await self._db.run(op)

    # --- rollouts ----------------------------------------------------------------------------
    async def get_rollout_by_id(self, rollout_id: str) -> Rollout:
        return await self._db.run(lambda txn: get_rollout(txn, rollout_id).rollout)

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
            params.append(dumps(list(rollout_ids)))
        if mode is not None:
            where.append("mode = ?")
            params.append(RolloutMode(mode).value)
        sql = f"SELECT {ROLLOUT_COLUMNS} FROM rollouts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY rowid DESC" if newest_first else " ORDER BY rowid"
        sql += " LIMIT ? OFFSET ?"
        params.extend([-1 if limit is None else limit, offset])
        return await self._db.run(lambda txn: [RolloutRow(r).rollout for r in txn.conn.execute(sql, params)])

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
            row = get_rollout(txn, rollout_id)
            changes: dict[str, Any] = {}
            if mode is not None:
                changes["mode"] = RolloutMode(mode).value
            if resources_id is not None:
                changes["resources_id"] = resources_id
            if config is not None:
                changes["config"] = config.model_dump_json()
            if metadata is not None:
                changes["metadata"] = dumps(metadata)
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
                            (queue_back(txn), rollout_id),
                        )
                        txn.after_commit(self._waiters.notify_queued)
                    else:
                        txn.conn.execute("UPDATE rollouts SET status = 'queuing' WHERE rollout_id = ?", (rollout_id,))
                else:
                    if row.latest_attempt_id is not None:
                        latest = get_attempt(txn, rollout_id, row.latest_attempt_id)
                        if latest.attempt.status in ACTIVE_ATTEMPT_STATUSES:
                            txn.conn.execute(
                                "UPDATE attempts SET status = ?, end_time = ?, deadline = NULL WHERE attempt_id = ?",
                                (AttemptStatus(status.value).value, now, latest.attempt.attempt_id),
                            )
                    finish_rollout(txn, self._waiters, rollout_id, status, now)
            return get_rollout(txn, rollout_id).rollout

        return await self._db.run(op)

    async def wait_for_rollouts(self, rollout_ids: Sequence[str], timeout: float | None = None) -> list[Rollout]:
        ids = list(dict.fromkeys(rollout_ids))
        terminal = [s.value for s in TERMINAL_ROLLOUT_STATUSES]

        def op(txn: Transaction) -> list[Rollout]:
            rows = {
                r[0]: r
                for r in txn.conn.execute(
                    f"SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE rollout_id IN (SELECT value FROM json_each(?))",
                    (dumps(ids),),
                )
            }
            for rollout_id in ids:
                if rollout_id not in rows:
                    raise RolloutNotFound(rollout_id)
            return [RolloutRow(rows[rid]).rollout for rid in ids if rows[rid][1] in terminal]

        waiter = Waiter(ids)
        self._waiters.add(waiter)
        try:
            return await self._look_until(waiter, op, lambda finished: len(finished) == len(ids), timeout)
        finally:
            self._waiters.remove(waiter)

    async def _look_until(
        self, waiter: Waiter, op: Callable[[Transaction], T], done: Callable[[T], bool], timeout: float | None
    ) -> T:
        """``op``'s result once ``done`` accepts it or ``timeout`` seconds have passed (``None``: no limit),
        running it again each time ``waiter`` is woken."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            waiter.event.clear()
            result = await self._db.run(op)
            remaining = None if deadline is None else deadline - loop.time()
            if done(result) or (remaining is not None and remaining <= 0):
                return result
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.event.wait(), remaining)

    # --- spans -------------------------------------------------------------------------------
    async def add_many_spans(self, spans: Sequence[Span]) -> list[Span]:
        spans = list(spans)
        return numbered(spans, await self._db.run(add_parsed_spans_op(spans)))

    async def add_encoded_spans(self, spans: Sequence[EncodedSpan]) -> list[int]:
        return await self._db.run(add_spans_op(list(spans)))

    async def submit_spans(self, spans: Sequence[Span]) -> asyncio.Future[list[Span]]:
        spans = list(spans)
        written = self._db.submit(add_parsed_spans_op(spans))  # queued: ordered before any later operation
        return asyncio.ensure_future(numbered_when_written(spans, written))

    async def query_spans(self, rollout_id: str, attempt_id: str | Literal["latest"] | None = None) -> list[Span]:
        return spans_of_rows(await self._db.run(lambda txn: span_rows(txn, rollout_id, attempt_id)))

    async def query_spans_json(self, rollout_id: str, attempt_id: str | None = None) -> str:
        """The spans of :meth:`query_spans` as one JSON array, without parsing them (for the server)."""
        return spans_json_of_rows(await self._db.run(lambda txn: span_rows(txn, rollout_id, attempt_id)))

    # --- resources ---------------------------------------------------------------------------
    async def add_resources(self, resources: Mapping[str, AnyResource], resources_id: str | None = None) -> Resources:
        check_resources(resources)
        return await self._db.run(lambda txn: insert_resources(txn, resources, resources_id))

    async def get_resources_by_id(self, resources_id: str) -> Resources:
        return await self._db.run(lambda txn: get_resources(txn, resources_id))

    async def get_latest_resources(self) -> Resources | None:
        return await self._db.run(get_latest_resources)

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
