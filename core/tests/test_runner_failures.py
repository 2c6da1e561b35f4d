"""The runner survives what goes wrong: failures are recorded and retried, heartbeats keep slow agents alive,
a rollout cancelled in the store is cancelled in the runner, and a runner killed with -9 costs one attempt, not the
rollout.

Everything runs against a real SQLite store (and, for the kill test, a real store server and real ``agl runner``
processes on 127.0.0.1). Every wait is bounded, and every process started here is killed in a ``finally``.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from background_runner import PATIENCE, finished, named, running, the_exception

import agentlightning as agl
from agentlightning import AttemptStatus, RolloutStatus, semconv
from agentlightning.cli import main as agl_main
from agentlightning.reward import final_reward

TESTS_DIR = Path(__file__).parent


async def poll(check: Callable[[], Awaitable[bool]], what: str, timeout: float = PATIENCE) -> None:
    """Wait until ``check()`` is true, or fail saying ``what`` never happened."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"Timed out after {timeout:g} s waiting for: {what}")
        await asyncio.sleep(0.02)


# --- agents that fail ----------------------------------------------------------------------------


class Moody:
    """An agent that does what its task says: fail, hang, return garbage, raise its own TimeoutError, or succeed."""

    def __init__(self) -> None:
        self.release = threading.Event()  # lets a hung sync agent's thread go at the end of the test

    def act(self, task: dict[str, Any]) -> Any:
        match task["do"]:
            case "raise":
                raise ValueError(f"cannot solve task {task['n']}")
            case "string":
                return "not a reward"
            case "nan":
                return math.nan
            case "own-timeout":
                raise TimeoutError("the LLM endpoint did not answer")
            case _:
                return 1.0

    def sync(self, task: dict[str, Any]) -> Any:
        if task["do"] == "hang":
            self.release.wait(PATIENCE)
            return 1.0
        return self.act(task)

    async def async_(self, task: dict[str, Any]) -> Any:
        if task["do"] == "hang":
            await asyncio.sleep(PATIENCE)
            return 1.0
        return self.act(task)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_failed_hung_and_garbage_returning_agents_fail_their_attempt_with_the_reason_and_the_runner_goes_on(
    db: agl.SqliteStore, kind: str
) -> None:
    moody = Moody()
    agent = agl.rollout(moody.sync if kind == "sync" else moody.async_)
    cases = {
        "raise": (AttemptStatus.FAILED, "ValueError", "cannot solve task 0"),
        "hang": (AttemptStatus.TIMEOUT, "AgentTimedOut", "ran past the rollout's timeout of 0.5 s"),
        "string": (AttemptStatus.FAILED, "AgentReturnedGarbage", "returned 'not a reward' (str)"),
        "nan": (AttemptStatus.FAILED, "AgentReturnedGarbage", "non-finite reward nan"),
        "own-timeout": (AttemptStatus.FAILED, "TimeoutError", "the LLM endpoint did not answer"),
    }
    requests = [
        agl.RolloutRequest(
            input={"do": do, "n": 0}, config=agl.RolloutConfig(timeout_seconds=0.5 if do == "hang" else None)
        )
        for do in cases
    ]
    requests += [agl.RolloutRequest(input={"do": "succeed", "n": i}) for i in range(3)]
    rollouts = await db.enqueue_many_rollouts(requests)
    try:
        # One rollout at a time, so the successful ones run after (and on the same runner as) the failures.
        async with running(agent, db, max_concurrency=1, worker_id="survivor") as runner:
            done = await finished(db, rollouts)
    finally:
        moody.release.set()
    assert runner.completed == len(rollouts)

    for rollout, (do, (status, error_type, message)) in zip(done, cases.items(), strict=False):
        assert rollout.status == RolloutStatus.FAILED, do
        (attempt,) = await db.query_attempts(rollout.rollout_id)
        assert (attempt.status, attempt.worker_id) == (status, "survivor"), do
        spans = await db.query_spans(rollout.rollout_id, "latest")
        got_type, got_message = the_exception(spans)
        assert got_type == error_type and message in got_message, (do, got_type, got_message)
        assert final_reward(spans) is None, do
    for rollout in done[len(cases) :]:
        assert rollout.status == RolloutStatus.SUCCEEDED
        (attempt,) = await db.query_attempts(rollout.rollout_id)
        assert (attempt.status, attempt.worker_id) == (AttemptStatus.SUCCEEDED, "survivor")
        spans = await db.query_spans(rollout.rollout_id, "latest")
        assert final_reward(spans) == 1.0 and not named(spans, semconv.SPAN_EXCEPTION)


async def test_failed_attempt_is_retried_when_the_rollout_allows(db: agl.SqliteStore) -> None:
    @agl.rollout
    async def flaky(task: Any, rollout: agl.AttemptedRollout) -> float:
        if rollout.attempt.sequence_id == 1:
            raise ConnectionError("first try always fails")
        return 1.0

    rollout = await db.enqueue_rollout("try twice", config=agl.RolloutConfig(max_attempts=2))
    async with running(flaky, db):
        (done,) = await finished(db, [rollout])
    assert done.status == RolloutStatus.SUCCEEDED and done.num_attempts == 2
    first, second = await db.query_attempts(rollout.rollout_id)
    assert (first.status, second.status) == (AttemptStatus.FAILED, AttemptStatus.SUCCEEDED)
    assert the_exception(await db.query_spans(rollout.rollout_id, first.attempt_id)) == (
        "ConnectionError",
        "first try always fails",
    )
    assert final_reward(await db.query_spans(rollout.rollout_id, "latest")) == 1.0


# --- heartbeats ----------------------------------------------------------------------------------
@pytest.mark.parametrize("heartbeat_interval", [0.1, 5.0], ids=["frequent", "default"])
async def test_heartbeats_keep_an_agent_slower_than_unresponsive_seconds_alive(
    db: agl.SqliteStore, heartbeat_interval: float
) -> None:
    unresponsive_seconds = 0.5

    @agl.rollout
    async def slow(task: Any, rollout: agl.AttemptedRollout) -> float:
        # Emit no spans (they count as heartbeats too): run until heartbeats alone kept the attempt alive
        # for three times its unresponsive_seconds.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PATIENCE
        while loop.time() < deadline:
            (attempt,) = await db.query_attempts(rollout.rollout_id)
            if attempt.status != AttemptStatus.RUNNING:
                raise AssertionError(f"the store ended the attempt as {attempt.status.value}")
            assert attempt.last_heartbeat_time is not None
            if attempt.last_heartbeat_time - attempt.start_time > 3 * unresponsive_seconds:
                return 1.0
            await asyncio.sleep(0.05)
        raise AssertionError("heartbeats never outlasted unresponsive_seconds")

    rollout = await db.enqueue_rollout(
        "slow", config=agl.RolloutConfig(unresponsive_seconds=unresponsive_seconds, max_attempts=1)
    )
    # Even with a heartbeat interval longer than the rollout's unresponsive_seconds, the runner beats in time.
    async with running(slow, db, heartbeat_interval=heartbeat_interval):
        (done,) = await finished(db, [rollout])
    (attempt,) = await db.query_attempts(rollout.rollout_id)
    assert (done.status, attempt.status) == (RolloutStatus.SUCCEEDED, AttemptStatus.SUCCEEDED)


async def test_rollout_cancelled_in_the_store_has_its_agent_cancelled_at_the_next_heartbeat(
    db: agl.SqliteStore,
) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    @agl.rollout
    async def agent(task: str) -> float:
        if task == "cancel me":
            started.set()
            try:
                await asyncio.sleep(PATIENCE)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return 1.0

    doomed = await db.enqueue_rollout("cancel me")
    async with running(agent, db, heartbeat_interval=0.1, max_concurrency=1) as runner:
        await asyncio.wait_for(started.wait(), PATIENCE)
        await db.update_rollout(doomed.rollout_id, status=RolloutStatus.CANCELLED)
        await asyncio.wait_for(cancelled.wait(), PATIENCE)
        # The slot is free again: the same runner takes the next rollout.
        (after,) = await finished(db, [await db.enqueue_rollout("after")])
    assert after.status == RolloutStatus.SUCCEEDED
    assert runner.completed == 2
    assert (await db.get_rollout_by_id(doomed.rollout_id)).status == RolloutStatus.CANCELLED
    (attempt,) = await db.query_attempts(doomed.rollout_id)
    assert attempt.status == AttemptStatus.CANCELLED
    error_type, message = the_exception(await db.query_spans(doomed.rollout_id, "latest"))
    assert error_type == "CancelledError" and "cancelled" in message


# --- a runner process killed with -9 -------------------------------------------------------------
async def agl_runner(url: str, agent: str, log: Path, *options: str) -> asyncio.subprocess.Process:
    """``agl runner`` in its own process, started in the tests folder so ``agents_for_tests`` imports."""
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agentlightning.cli",
            "runner",
            "--store",
            url,
            "--agent",
            agent,
            *options,
            cwd=TESTS_DIR,
            stdout=out,
            stderr=out,
        )


async def kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL a child process (if it still runs) and reap it."""
    if proc.returncode is None:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    await proc.wait()


async def test_runner_killed_mid_rollout_is_detected_unresponsive_and_the_rollout_completes_on_retry(
    tmp_path: Path,
) -> None:
    inner = agl.SqliteStore(tmp_path / "runs.db", sweep_interval=0.1)
    server = agl.StoreServer(inner, port=0).start()
    client = agl.StoreClient(server.url, retry_seconds=2)
    processes: list[asyncio.subprocess.Process] = []
    doomed_log, rescuer_log = tmp_path / "doomed.log", tmp_path / "rescuer.log"
    try:
        unresponsive_seconds = 1.0
        marker = tmp_path / "agent-started"
        config = agl.RolloutConfig(unresponsive_seconds=unresponsive_seconds, max_attempts=2)
        rollout = await client.enqueue_rollout({"marker": str(marker)}, config=config)
        rid = rollout.rollout_id

        # A real `agl runner` (default heartbeat interval) takes the rollout; its agent hangs.
        doomed = await agl_runner(server.url, "agents_for_tests:slow_agent", doomed_log, "--worker-id", "doomed")
        processes.append(doomed)

        async def agent_started() -> bool:
            if doomed.returncode is not None:
                pytest.fail(f"the runner exited with {doomed.returncode}:\n{doomed_log.read_text()}")
            return marker.exists() and marker.read_text() != ""

        await poll(agent_started, "the runner's agent to start")
        (first,) = await client.query_attempts(rid)
        assert first.attempt_id == marker.read_text() and first.worker_id == "doomed"

        # While the runner lives, its heartbeats keep the attempt alive past unresponsive_seconds.
        async def kept_alive_by_heartbeats() -> bool:
            (attempt,) = await client.query_attempts(rid)
            assert attempt.status == AttemptStatus.RUNNING, f"{attempt}\n{doomed_log.read_text()}"
            assert attempt.last_heartbeat_time is not None
            return attempt.last_heartbeat_time - attempt.start_time > 1.5 * unresponsive_seconds

        await poll(kept_alive_by_heartbeats, "the runner's heartbeats to outlast unresponsive_seconds")

        os.kill(doomed.pid, signal.SIGKILL)
        assert await asyncio.wait_for(doomed.wait(), PATIENCE) == -signal.SIGKILL

        async def requeued() -> bool:
            return (await client.get_rollout_by_id(rid)).status == RolloutStatus.REQUEUING

        await poll(requeued, "the killed runner's rollout to be requeued")

        # A second runner picks it up as attempt 2 and finishes it.
        rescuer = await agl_runner(
            server.url, "agents_for_tests:slow_agent", rescuer_log, "--worker-id", "rescuer", "--max-rollouts", "1"
        )
        processes.append(rescuer)
        assert await asyncio.wait_for(rescuer.wait(), PATIENCE) == 0, rescuer_log.read_text()
        assert "Runner finished 1 rollouts." in rescuer_log.read_text()
        (done,) = await client.wait_for_rollouts([rid], timeout=PATIENCE)
        assert done.status == RolloutStatus.SUCCEEDED and done.num_attempts == 2
        attempts = await client.query_attempts(rid)
        assert [(a.sequence_id, a.status, a.worker_id) for a in attempts] == [
            (1, AttemptStatus.UNRESPONSIVE, "doomed"),
            (2, AttemptStatus.SUCCEEDED, "rescuer"),
        ]
        assert final_reward(await client.query_spans(rid, "latest")) == 1.0
    finally:
        for proc in processes:
            await kill(proc)
        await client.close()
        server.stop()
        await inner.close()


def test_agl_runner_with_a_bad_agent_exits_non_zero_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "agentlightning.cli", "runner", "--store", store, "--agent", "agents_for_tests:nope"],
        cwd=TESTS_DIR,
        capture_output=True,
        text=True,
        timeout=PATIENCE,
    )
    assert result.returncode == 1
    assert "agl: error: Module 'agents_for_tests' has no attribute 'nope'" in result.stderr
    assert "Traceback" not in result.stderr

    for spec, message in [
        ("agents_for_tests", "--agent must look like module:attribute"),
        ("no_such_module_anywhere:agent", "Cannot import 'no_such_module_anywhere'"),
        ("agents_for_tests:HANG_SECONDS", "is a float, not an @agl.rollout function or agl.LitAgent"),
    ]:
        assert agl_main(["runner", "--store", store, "--agent", spec]) == 1, spec
        assert message in capsys.readouterr().err, spec
    assert not (tmp_path / "runs.db").exists()  # nothing was opened for a runner that could not start
