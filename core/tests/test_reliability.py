"""Crash tests with real processes: a worker killed with -9 mid-attempt, a store server killed with -9 mid-write.

Everything runs on 127.0.0.1. Every wait is a bounded poll or an event, and every process started
here is killed in a ``finally``, so a failing test leaves nothing running.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import make_span

import agentlightning as agl
from agentlightning import AttemptStatus, RolloutStatus

pytestmark = pytest.mark.asyncio

# Upper bound of every wait below; generous so a loaded 2-core machine does not flake.
PATIENCE = 20.0

# A worker in its own process: takes the one queued rollout, writes a span, then heartbeats until killed.
WORKER_CODE = """
import asyncio, secrets, sys, time
import agentlightning as agl

async def main(url: str) -> None:
    client = agl.StoreClient(url, retry_seconds=5)
    try:
        got = await client.dequeue_rollout(worker_id="doomed")
        if got is None:
            sys.exit("worker: the queue was empty")
        rollout_id, attempt_id = got.rollout_id, got.attempt.attempt_id
        now = time.time()
        span = agl.Span(
            rollout_id=rollout_id, attempt_id=attempt_id, trace_id=secrets.token_hex(16),
            span_id=secrets.token_hex(8), name="before-the-kill", start_time=now, end_time=now + 0.001,
        )
        await client.add_span(span)
        print("started", rollout_id, attempt_id, span.span_id, flush=True)
        while True:
            await client.heartbeat(rollout_id, attempt_id)
            await asyncio.sleep(0.2)
    finally:
        await client.close()

asyncio.run(main(sys.argv[1]))
"""


# --- helpers -------------------------------------------------------------------------------------
def free_port() -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_log(log: Path) -> str:
    """The store server's output, for failure messages."""
    return log.read_text(errors="replace")


async def poll(check: Callable[[], Awaitable[bool]], what: str, timeout: float = PATIENCE) -> None:
    """Wait until ``check()`` is true, or fail saying ``what`` never happened."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"Timed out after {timeout:g} s waiting for: {what}")
        await asyncio.sleep(0.02)


async def kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL a child process (if it still runs) and reap it."""
    if proc.returncode is None:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # it exited between the check and the kill
            pass
    await proc.wait()


@asynccontextmanager
async def store_server_process(db: Path, log: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``agl store serve`` over the SQLite file ``db``, in its own process; yields it and its URL once it listens."""
    port = free_port()
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agentlightning.cli",
            "store",
            "serve",
            "--store",
            f"sqlite:///{db}",  # tmp_path is absolute: sqlite:////abs/path.db
            "--port",
            str(port),
            stdout=out,
            stderr=out,
        )
    try:

        async def listening() -> bool:
            if proc.returncode is not None:
                pytest.fail(f"The store server exited with {proc.returncode}:\n{read_log(log)}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return False
            writer.close()
            await writer.wait_closed()
            return True

        await poll(listening, f"the store server to listen on port {port}")
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        await kill(proc)


async def rollout_status_is(store: agl.LightningStore, rollout_id: str, status: RolloutStatus) -> bool:
    return (await store.get_rollout_by_id(rollout_id)).status == status


# --- 1. a worker killed with -9 mid-attempt ------------------------------------------------------
@pytest.mark.parametrize("max_attempts", [2, 1], ids=["retried", "failed"])
async def test_worker_killed_mid_attempt_is_marked_unresponsive_then_retried_or_failed(
    tmp_path: Path, max_attempts: int
) -> None:
    inner = agl.SqliteStore(tmp_path / "runs.db", sweep_interval=0.1)
    server = agl.StoreServer(inner, port=0).start()
    client = agl.StoreClient(server.url, retry_seconds=2)
    worker: asyncio.subprocess.Process | None = None
    try:
        unresponsive_seconds = 1.0
        config = agl.RolloutConfig(
            unresponsive_seconds=unresponsive_seconds, max_attempts=max_attempts, retry_on=[AttemptStatus.UNRESPONSIVE]
        )
        rollout = await client.enqueue_rollout({"task": "survive a kill -9"}, config=config)
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER_CODE, server.url, stdout=asyncio.subprocess.PIPE
        )
        assert worker.stdout is not None
        line = (await asyncio.wait_for(worker.stdout.readline(), PATIENCE)).decode().split()
        assert line[:1] == ["started"], f"worker said {line!r} (exit code {worker.returncode})"
        rollout_id, first_attempt_id, first_span_id = line[1:]
        assert rollout_id == rollout.rollout_id

        # Heartbeats alone must keep the attempt alive for longer than unresponsive_seconds, so what
        # ends it below is the worker's death and not merely the passing of time.
        async def kept_alive_by_heartbeats() -> bool:
            (attempt,) = await client.query_attempts(rollout_id)
            assert attempt.status == AttemptStatus.RUNNING, attempt
            assert attempt.last_heartbeat_time is not None
            return attempt.last_heartbeat_time - attempt.start_time > 1.5 * unresponsive_seconds

        await poll(kept_alive_by_heartbeats, "the worker's heartbeats to outlast unresponsive_seconds")

        os.kill(worker.pid, signal.SIGKILL)
        assert await asyncio.wait_for(worker.wait(), PATIENCE) == -signal.SIGKILL

        if max_attempts == 2:
            await poll(
                lambda: rollout_status_is(client, rollout_id, RolloutStatus.REQUEUING),
                "the rollout of the killed worker to be requeued",
            )
            (first,) = await client.query_attempts(rollout_id)
            assert first.status == AttemptStatus.UNRESPONSIVE and first.end_time is not None

            # A second worker picks the rollout up as attempt 2 and finishes it.
            second = await client.dequeue_rollout(worker_id="rescuer")
            assert second is not None and second.rollout_id == rollout_id
            assert second.attempt.sequence_id == 2 and second.num_attempts == 2
            await client.add_span(make_span(rollout_id, second.attempt.attempt_id, "after-the-kill"))
            await client.update_attempt(rollout_id, second.attempt.attempt_id, status=AttemptStatus.SUCCEEDED)
            (finished,) = await client.wait_for_rollouts([rollout_id], timeout=PATIENCE)
            assert finished.status == RolloutStatus.SUCCEEDED
            attempts = await client.query_attempts(rollout_id)
            assert [(a.sequence_id, a.status) for a in attempts] == [
                (1, AttemptStatus.UNRESPONSIVE),
                (2, AttemptStatus.SUCCEEDED),
            ]
            assert attempts[0].worker_id == "doomed" and attempts[1].worker_id == "rescuer"
            assert [s.name for s in await client.query_spans(rollout_id, "latest")] == ["after-the-kill"]
        else:
            (finished,) = await client.wait_for_rollouts([rollout_id], timeout=PATIENCE)
            assert finished.status == RolloutStatus.FAILED and finished.num_attempts == 1
            (first,) = await client.query_attempts(rollout_id)
            assert first.status == AttemptStatus.UNRESPONSIVE
            assert await client.dequeue_rollout(worker_id="rescuer") is None
            assert (await client.statistics()).queue_length == 0

        # The span the killed worker wrote before it died is kept.
        kept = await client.query_spans(rollout_id, first_attempt_id)
        assert [(s.span_id, s.name) for s in kept] == [(first_span_id, "before-the-kill")]
    finally:
        if worker is not None:
            await kill(worker)
        await client.close()
        server.stop()
        await inner.close()


# --- 2. the store server killed with -9 while runners write ---------------------------------------
@dataclass
class Acknowledged:
    """Every write the server answered with success: what must survive the crash."""

    attempts: dict[str, str] = field(default_factory=dict)  # attempt id -> rollout id, from dequeues
    spans: dict[str, list[str]] = field(default_factory=dict)  # attempt id -> span ids, from add_many_spans
    succeeded: dict[str, str] = field(default_factory=dict)  # rollout id -> attempt id, from update_attempt
    errors: list[agl.StoreError] = field(default_factory=list)  # how each writer learned the server was gone


async def test_store_server_killed_mid_write_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    log = tmp_path / "server.log"
    total, writers, kill_after = 200, 8, 30
    acked = Acknowledged()
    enough = asyncio.Event()

    async def writer(url: str, name: str) -> None:
        client = agl.StoreClient(url, retry_seconds=0.5)
        try:
            while (got := await client.dequeue_rollout(worker_id=name)) is not None:
                rollout_id, attempt_id = got.rollout_id, got.attempt.attempt_id
                acked.attempts[attempt_id] = rollout_id
                spans = [make_span(rollout_id, attempt_id, f"step-{i}") for i in range(3)]
                await client.add_many_spans(spans)
                acked.spans.setdefault(attempt_id, []).extend(s.span_id for s in spans)
                await client.update_attempt(rollout_id, attempt_id, status=AttemptStatus.SUCCEEDED)
                acked.succeeded[rollout_id] = attempt_id
                if len(acked.succeeded) >= kill_after:
                    enough.set()
        except agl.StoreError as exc:  # the server died under this writer
            acked.errors.append(exc)
        finally:
            await client.close()

    async with store_server_process(db, log) as (server, url):
        setup = agl.StoreClient(url, retry_seconds=2)
        try:
            rollouts = await setup.enqueue_many_rollouts([agl.RolloutRequest(input=i) for i in range(total)])
        finally:
            await setup.close()
        tasks = [asyncio.create_task(writer(url, f"w{i}")) for i in range(writers)]
        try:
            all_done: asyncio.Future[object] = asyncio.ensure_future(asyncio.gather(*tasks))
            waiting: asyncio.Future[object] = asyncio.ensure_future(enough.wait())
            await asyncio.wait([waiting, all_done], timeout=PATIENCE, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            assert enough.is_set(), f"only {len(acked.succeeded)} rollouts finished before the kill:\n{read_log(log)}"
            # Kill while the writers still have requests in flight.
            os.kill(server.pid, signal.SIGKILL)
            assert await asyncio.wait_for(server.wait(), PATIENCE) == -signal.SIGKILL
            await asyncio.wait_for(all_done, PATIENCE)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    # The kill landed mid-stream: every writer was cut off by it, with work left in the queue.
    assert len(acked.errors) == writers, acked.errors
    assert all(isinstance(e, agl.StoreUnavailable) for e in acked.errors), acked.errors
    assert kill_after <= len(acked.succeeded) < total

    # Restart on the same file (a new port) and check every acknowledged write against it.
    async with store_server_process(db, log) as (_, url):
        client = agl.StoreClient(url, retry_seconds=2)
        try:
            for attempt_id, rollout_id in acked.attempts.items():
                attempts = {a.attempt_id: a for a in await client.query_attempts(rollout_id)}
                assert attempt_id in attempts, f"acknowledged dequeue of {rollout_id} lost its attempt {attempt_id}"
                assert (await client.get_rollout_by_id(rollout_id)).status != RolloutStatus.QUEUING
                if attempt_id in acked.spans:  # an acknowledged span moved the attempt to running
                    assert attempts[attempt_id].status in (AttemptStatus.RUNNING, AttemptStatus.SUCCEEDED)
            for attempt_id, span_ids in acked.spans.items():
                stored = await client.query_spans(acked.attempts[attempt_id], attempt_id)
                missing = set(span_ids) - {s.span_id for s in stored}
                assert not missing, f"acknowledged spans {missing} of attempt {attempt_id} are gone"
                sequence_ids = [s.sequence_id for s in stored]
                assert len(set(sequence_ids)) == len(sequence_ids)
            for rollout_id, attempt_id in acked.succeeded.items():
                rollout = await client.get_rollout_by_id(rollout_id)
                assert rollout.status == RolloutStatus.SUCCEEDED, f"acknowledged success of {rollout_id} is gone"
                (attempt,) = await client.query_attempts(rollout_id)
                assert attempt.attempt_id == attempt_id and attempt.status == AttemptStatus.SUCCEEDED

            # Whatever was or was not committed at the kill, every rollout is in one consistent state.
            stats = await client.statistics()
            assert sum(stats.rollouts.values()) == total
            assert stats.rollouts[RolloutStatus.SUCCEEDED] >= len(acked.succeeded)
            assert stats.spans >= sum(len(ids) for ids in acked.spans.values())
            orphans: dict[str, str] = {}  # rollout id -> attempt id, dequeued by a writer the kill cut off
            for rollout in await client.query_rollouts(rollout_ids=[r.rollout_id for r in rollouts]):
                attempts_of = await client.query_attempts(rollout.rollout_id)
                assert [a.sequence_id for a in attempts_of] == list(range(1, rollout.num_attempts + 1))
                if rollout.status == RolloutStatus.QUEUING:
                    assert not attempts_of
                elif rollout.status == RolloutStatus.SUCCEEDED:
                    assert attempts_of[-1].status == AttemptStatus.SUCCEEDED
                else:
                    assert rollout.status in (RolloutStatus.PREPARING, RolloutStatus.RUNNING), rollout
                    assert attempts_of[-1].status in (AttemptStatus.PREPARING, AttemptStatus.RUNNING)
                    orphans[rollout.rollout_id] = attempts_of[-1].attempt_id
            assert stats.queue_length == stats.rollouts[RolloutStatus.QUEUING] > 0

            # The restarted store is fully usable: the attempts the kill left open can still be ended
            # (some were dequeued, committed, yet never acknowledged, so no writer knows them; with the
            # default RolloutConfig, which has no timeouts, only such a manual step ends them), the rest
            # of the queue drains, new work runs, and every rollout ends succeeded.
            for rollout_id, attempt_id in orphans.items():
                await client.add_span(make_span(rollout_id, attempt_id, "after-the-restart"))
                await client.update_attempt(rollout_id, attempt_id, status=AttemptStatus.SUCCEEDED)
            extra = await client.enqueue_rollout("after the restart")
            drained: list[str] = []
            while (got := await client.dequeue_rollout(worker_id="after")) is not None:
                await client.add_span(make_span(got.rollout_id, got.attempt.attempt_id))
                await client.update_attempt(got.rollout_id, got.attempt.attempt_id, status=AttemptStatus.SUCCEEDED)
                drained.append(got.rollout_id)
            assert len(drained) == stats.queue_length + 1 and drained[-1] == extra.rollout_id
            everything = [r.rollout_id for r in rollouts] + [extra.rollout_id]
            finished = await client.wait_for_rollouts(everything, timeout=PATIENCE)
            assert [r.status for r in finished] == [RolloutStatus.SUCCEEDED] * (total + 1)
            after = await client.statistics()
            assert after.queue_length == 0
            assert after.rollouts[RolloutStatus.SUCCEEDED] == after.attempts[AttemptStatus.SUCCEEDED] == total + 1
        finally:
            await client.close()
