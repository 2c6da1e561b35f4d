"""One thread that owns a SQLite connection and commits the work of many callers together.

Callers on any event loop submit a function; the thread runs every function that is waiting in
one transaction (each in its own savepoint, so one failure does not undo the others), commits once,
then answers each caller. A caller is answered only after its work is committed: an acknowledged
write survives a crash of the process.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from agentlightning.errors import StoreConflict, StoreError

T = TypeVar("T")
log = logging.getLogger("agentlightning.store")

_MAX_BATCH = 512


class Transaction:
    """What a submitted function receives: the connection, and a way to act after the commit."""

    __slots__ = ("_after_commit", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._after_commit: list[Callable[[], None]] = []

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` in the database thread once this work is committed (not if it is rolled back)."""
        self._after_commit.append(callback)


class _Job(Generic[T]):
    __slots__ = ("callbacks", "error", "fn", "future", "loop", "result")

    def __init__(self, fn: Callable[[Transaction], T], loop: asyncio.AbstractEventLoop, future: asyncio.Future[T]):
        self.fn = fn
        self.loop = loop
        self.future = future
        self.result: Any = None
        self.error: BaseException | None = None
        self.callbacks: list[Callable[[], None]] = []


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled; the work itself is committed or rolled back already
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Database:
    """The thread and its connection. ``idle`` is called inside a transaction whenever it is due.

    ``idle`` returns how many seconds may pass before it is called again (``None``: no sooner than
    ``max_idle_interval``); the thread also calls it before every batch whose time has come.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        idle: Callable[[Transaction], float | None] | None = None,
        max_idle_interval: float = 1.0,
        write: bool = True,
        name: str = "agentlightning-sqlite",
    ) -> None:
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._idle = idle
        self._max_idle_interval = max_idle_interval
        self._begin = "BEGIN IMMEDIATE" if write else "BEGIN"
        self._closed = False
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, args=(connect,), name=name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise self._startup_error

    async def run(self, fn: Callable[[Transaction], T]) -> T:
        """Run ``fn`` in the database thread, inside a transaction; return its result once committed."""
        return await self.submit(fn)

    def submit(self, fn: Callable[[Transaction], T]) -> asyncio.Future[T]:
        """Queue ``fn`` (jobs run in the order queued) and return the future of its committed result."""
        if self._closed:
            raise StoreError("This store is closed; open a new one.")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(fn, loop, future))
        return future

    def close(self) -> None:
        """Finish the work already submitted, then stop the thread and close the connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()

    # --- the thread -------------------------------------------------------------------------
    def _main(self, connect: Callable[[], sqlite3.Connection]) -> None:
        try:
            conn = connect()
        except BaseException as exc:  # reported to the constructor's caller
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        next_idle = 0.0
        try:
            while True:
                now = time.monotonic()
                if self._idle is not None and now >= next_idle:
                    next_idle = now + self._run_idle(conn)
                timeout = None if self._idle is None else max(0.0, next_idle - time.monotonic())
                try:
                    job = self._queue.get(timeout=timeout)
                except queue.Empty:
                    continue
                if job is None:
                    return
                batch = [job]
                stop = False
                while len(batch) < _MAX_BATCH:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    batch.append(more)
                self._run_batch(conn, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _run_idle(self, conn: sqlite3.Connection) -> float:
        assert self._idle is not None
        txn = Transaction(conn)
        try:
            conn.execute(self._begin)
            wait = self._idle(txn)
            conn.execute("COMMIT")
        except Exception:
            log.exception("Store maintenance (timeouts, unresponsive workers) failed; retrying shortly.")
            _rollback(conn)
            return self._max_idle_interval
        for callback in txn._after_commit:
            _call(callback)
        return self._max_idle_interval if wait is None else max(0.0, min(wait, self._max_idle_interval))

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job[Any]]) -> None:
        try:
            conn.execute(self._begin)
            for job in batch:
                txn = Transaction(conn)
                conn.execute("SAVEPOINT job")
                try:
                    job.result = job.fn(txn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    job.error = exc if isinstance(exc, StoreError) else _wrap(exc)
                else:
                    job.callbacks = txn._after_commit
                conn.execute("RELEASE job")
            conn.execute("COMMIT")
        except Exception as exc:
            _rollback(conn)
            log.exception("Store transaction failed; nothing of it was written.")
            error = StoreError(f"The store could not commit: {exc}. Nothing of this request was written.")
            for job in batch:
                _answer(job, None, error)
            return
        for job in batch:
            for callback in job.callbacks:
                _call(callback)
            _answer(job, job.result, job.error)


class Checkpointer:
    """Copies the write-ahead log into the database file from its own thread and connection.

    SQLite would otherwise checkpoint inside a commit now and then, making that commit wait for
    the copy and its fsync; here commits never wait, and the log stays small.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], interval: float = 2.0) -> None:
        self._conn = connect()
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._main, name="agentlightning-sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                log.warning("Checkpoint of the store's write-ahead log failed; retrying", exc_info=True)

    def close(self) -> None:
        """Stop, after a last full checkpoint so the log is folded into the file."""
        self._stop.set()
        self._thread.join()
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            log.warning(
                "Final checkpoint of the store failed; the log is kept and replayed on next open", exc_info=True
            )
        self._conn.close()


def _answer(job: _Job[Any], result: Any, error: BaseException | None) -> None:
    try:
        job.loop.call_soon_threadsafe(_resolve, job.future, result, error)
    except RuntimeError:  # the caller's event loop is closed: nobody is waiting any more
        pass


def _wrap(exc: Exception) -> StoreError:
    if isinstance(exc, sqlite3.IntegrityError):
        return StoreConflict(f"The request conflicts with what the store holds: {exc}.")
    log.error("Unexpected error inside a store operation", exc_info=exc)
    return StoreError(f"Store operation failed: {type(exc).__name__}: {exc}")


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        log.exception("Rollback failed")


def _call(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:
        log.exception("Store notification failed")
