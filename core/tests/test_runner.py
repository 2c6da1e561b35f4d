"""The runner, as a user relies on it: every agent shape runs, failures are recorded and survived, rollouts run
concurrently, heartbeats keep slow agents alive, and a runner killed with -9 costs one attempt, not the rollout.

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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import agentlightning as agl
from agentlightning import AttemptStatus, RolloutStatus, semconv
from agentlightning.cli import main as agl_main
from agentlightning.reward import final_reward

# Upper bound of every wait below; generous so a loaded 2-core machine does not flake.
PATIENCE = 20.0
TESTS_DIR = Path(__file__).parent


# --- helpers -------------------------------------------------------------------------------------
@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[agl.SqliteStore]:
    """A SQLite store in a file, sweeping for expired attempts often."""
    store = agl.SqliteStore(tmp_path / "runs.db", sweep_interval=0.05)
    yield store
    await store.close()


@asynccontextmanager
async def running(agent: agl.LitAgent, store: agl.LightningStore, **options: Any) -> AsyncIterator[agl.Runner]:
    """A runner working in the background; on exit it finishes its rollouts in flight, stops and closes."""
    runner = agl.Runner(agent, store, poll_interval=0.05, **options)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop=stop))
    try:
        yield runner
    finally:
        stop.set()
        done, _ = await asyncio.wait([task], timeout=PATIENCE)
        if not done:
            task.cancel()
        runner.close()
        if done:
            task.result()  # the runner itself must not have crashed


async def finished(store: agl.LightningStore, rollouts: list[agl.Rollout]) -> list[agl.Rollout]:
    """Wait until the rollouts finish; fails if any is still unfinished after PATIENCE."""
    done = await store.wait_for_rollouts([r.rollout_id for r in rollouts], timeout=PATIENCE)
    assert len(done) == len(rollouts), f"only {len(done)} of {len(rollouts)} rollouts finished"
    return done


async def poll(check: Callable[[], Awaitable[bool]], what: str, timeout: float = PATIENCE) -> None:
    """Wait until ``check()`` is true, or fail saying ``what`` never happened."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"Timed out after {timeout:g} s waiting for: {what}")
        await asyncio.sleep(0.02)


def named(spans: list[agl.Span], name: str) -> list[agl.Span]:
    return [s for s in spans if s.name == name]


def the_exception(spans: list[agl.Span]) -> tuple[str, str]:
    """(type, message) of the attempt's one exception span."""
    (span,) = named(spans, semconv.SPAN_EXCEPTION)
    assert span.status.status_code == agl.StatusCode.ERROR
    return str(span.attributes[semconv.EXCEPTION_TYPE]), str(span.attributes[semconv.EXCEPTION_MESSAGE])


# --- 1. every agent shape ------------------------------------------------------------------------
V1: dict[str, agl.AnyResource] = {
    "llm": agl.LLM(base_url="http://127.0.0.1:9/v1", model="model-v1"),
    "prompt_template": agl.PromptTemplate(template="v1: {question}"),
}
V2: dict[str, agl.AnyResource] = {
    "llm": agl.LLM(base_url="http://127.0.0.1:9/v1", model="model-v2"),
    "prompt_template": agl.PromptTemplate(template="v2: {question}"),
}


def shaped_agents(seen: dict[str, dict[str, Any]]) -> dict[str, Callable[..., Any]]:
    """One function per signature the runner can fill, sync and async; each notes what it got and returns
    ``task["reward"]``."""

    def note(task: Any, **got: Any) -> float | None:
        seen[task["name"]] = got
        reward: float | None = task["reward"]
        return reward

    def task_(task: Any) -> Any:
        return note(task)

    async def task_async(task: Any) -> Any:
        return note(task)

    def llm_(task: Any, llm: agl.LLM) -> Any:
        return note(task, llm=llm.model)

    async def llm_async(task: Any, llm: agl.LLM) -> Any:
        return note(task, llm=llm.model)

    def prompt_(task: Any, prompt_template: agl.PromptTemplate) -> Any:
        return note(task, prompt=prompt_template.format(question="q"))

    async def prompt_async(task: Any, prompt_template: agl.PromptTemplate) -> Any:
        return note(task, prompt=prompt_template.format(question="q"))

    def resources_(task: Any, resources: agl.Resources) -> Any:
        return note(task, resources=resources.resources_id)

    async def resources_async(task: Any, resources: agl.Resources) -> Any:
        return note(task, resources=resources.resources_id)

    def task_rollout(task: Any, rollout: agl.AttemptedRollout) -> Any:
        return note(task, rollout=rollout.rollout_id)

    async def task_rollout_async(task: Any, rollout: agl.AttemptedRollout) -> Any:
        return note(task, rollout=rollout.rollout_id)

    def llm_rollout(task: Any, llm: agl.LLM, rollout: agl.AttemptedRollout) -> Any:
        return note(task, llm=llm.model, rollout=rollout.rollout_id)

    async def llm_rollout_async(task: Any, llm: agl.LLM, rollout: agl.AttemptedRollout) -> Any:
        return note(task, llm=llm.model, rollout=rollout.rollout_id)

    def prompt_rollout(task: Any, prompt_template: agl.PromptTemplate, rollout: agl.AttemptedRollout) -> Any:
        return note(task, prompt=prompt_template.format(question="q"), rollout=rollout.rollout_id)

    async def prompt_rollout_async(
        task: Any, prompt_template: agl.PromptTemplate, rollout: agl.AttemptedRollout
    ) -> Any:
        return note(task, prompt=prompt_template.format(question="q"), rollout=rollout.rollout_id)

    def resources_rollout(task: Any, resources: agl.Resources, rollout: agl.AttemptedRollout) -> Any:
        return note(task, resources=resources.resources_id, rollout=rollout.rollout_id)

    async def resources_rollout_async(task: Any, resources: agl.Resources, rollout: agl.AttemptedRollout) -> Any:
        return note(task, resources=resources.resources_id, rollout=rollout.rollout_id)

    return {fn.__name__: fn for fn in list(locals().values()) if callable(fn) and fn is not note}


SHAPES = list(shaped_agents({}))


@pytest.mark.parametrize("shape", SHAPES)
async def test_every_agent_shape_gets_its_rollouts_resources_and_reports_its_reward(
    db: agl.SqliteStore, shape: str
) -> None:
    seen: dict[str, dict[str, Any]] = {}
    agent = agl.rollout(shaped_agents(seen)[shape])
    assert agent.is_async == shape.endswith("_async")
    assert agent.uses_resources == any(k in shape for k in ("llm", "prompt", "resources"))
    v1 = await db.add_resources(V1)
    v2 = await db.add_resources(V2)  # the latest
    pinned = await db.enqueue_rollout({"name": "pinned", "reward": 0.5}, resources_id=v1.resources_id)
    latest = await db.enqueue_rollout({"name": "latest", "reward": None})
    async with running(agent, db):
        done = await finished(db, [pinned, latest])
    assert [r.status for r in done] == [RolloutStatus.SUCCEEDED] * 2

    # Each rollout got the resources version it names; one that names none got the latest.
    for rollout, version, model, prompt in ((pinned, v1, "model-v1", "v1: q"), (latest, v2, "model-v2", "v2: q")):
        got = seen[rollout.input["name"]]  # type: ignore[index,call-overload]
        assert got.get("llm", model) == model
        assert got.get("prompt", prompt) == prompt
        assert got.get("resources", version.resources_id) == version.resources_id
        assert got.get("rollout", rollout.rollout_id) == rollout.rollout_id
        assert set(got) == {k for k in ("llm", "prompt", "resources", "rollout") if k in shape}

    # A returned float is the final reward, recorded under the runner's root span; None records none.
    spans = await db.query_spans(pinned.rollout_id, "latest")
    (root,) = [s for s in spans if s.parent_id is None]
    assert root.name == f"agentlightning.rollout {agent.name}"
    (reward,) = named(spans, semconv.SPAN_REWARD)
    assert reward.parent_id == root.span_id and final_reward(spans) == 0.5
    spans = await db.query_spans(latest.rollout_id, "latest")
    assert not named(spans, semconv.SPAN_REWARD) and not named(spans, semconv.SPAN_EXCEPTION)
    assert final_reward(spans) is None


class SyncAgent(agl.LitAgent):
    """A class-based agent whose rollout is a plain method."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, str, str, bool]] = []

    def rollout(self, task: Any, resources: agl.Resources, rollout: agl.AttemptedRollout) -> float:
        on_loop_thread = threading.current_thread() is threading.main_thread()
        self.seen.append((task, resources.resources_id, rollout.rollout_id, on_loop_thread))
        return float(task)


class AsyncAgent(SyncAgent):
    """The same agent with an async rollout."""

    async def rollout(  # type: ignore[override]
        self, task: Any, resources: agl.Resources, rollout: agl.AttemptedRollout
    ) -> float:
        return super().rollout(task, resources, rollout)


@pytest.mark.parametrize("agent_class", [SyncAgent, AsyncAgent])
async def test_class_based_agent_runs_with_the_rollouts_resources(
    db: agl.SqliteStore, agent_class: type[SyncAgent]
) -> None:
    agent = agent_class()
    v1 = await db.add_resources(V1)
    rollouts = await db.enqueue_many_rollouts(
        [agl.RolloutRequest(input=i, resources_id=v1.resources_id) for i in range(3)]
    )
    async with running(agent, db):
        done = await finished(db, rollouts)
    assert [r.status for r in done] == [RolloutStatus.SUCCEEDED] * 3
    assert sorted(agent.seen) == [
        (i, v1.resources_id, r.rollout_id, agent_class is AsyncAgent) for i, r in enumerate(rollouts)
    ]
    for i, rollout in enumerate(rollouts):
        assert final_reward(await db.query_spans(rollout.rollout_id, "latest")) == float(i)


def no_task() -> float:
    return 1.0


def unknown_parameter(task: Any, temperature: float) -> float:
    return 1.0


def extra_keywords(task: Any, llm: agl.LLM, **kwargs: Any) -> float:
    return 1.0


def task_keyword_only(*, task: Any) -> float:
    return 1.0


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (no_task, r"no_task\(\) must take the task as its first argument"),
        (unknown_parameter, r"unknown_parameter\(\) has parameters \['temperature'\] that the runner cannot fill"),
        (extra_keywords, r"\['kwargs'\] that the runner cannot fill; after the task it may take any of"),
        (task_keyword_only, r"task_keyword_only\(\) must take the task as its first argument"),
    ],
)
def test_bad_agent_signature_fails_at_decoration(fn: Callable[..., Any], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        agl.rollout(fn)


async def test_runner_stops_after_max_rollouts_or_once_the_queue_stays_empty(db: agl.SqliteStore) -> None:
    @agl.rollout
    async def agent(task: int) -> float:
        return float(task)

    rollouts = await db.enqueue_many_rollouts([agl.RolloutRequest(input=i) for i in range(10)])
    runner = agl.Runner(agent, db, poll_interval=0.05)
    try:
        assert await asyncio.wait_for(runner.run(max_rollouts=4), PATIENCE) == 4
        assert (await db.statistics()).queue_length == 6
        # The rest, then nothing more for idle_timeout seconds: the runner returns by itself.
        assert await asyncio.wait_for(runner.run(idle_timeout=0.2), PATIENCE) == 10
    finally:
        runner.close()
    done = await finished(db, rollouts)
    assert [r.status for r in done] == [RolloutStatus.SUCCEEDED] * 10
    assert [a.worker_id for r in done for a in await db.query_attempts(r.rollout_id)] == [runner.worker_id] * 10


# --- 2. agents that fail -------------------------------------------------------------------------
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


# --- 3. concurrency ------------------------------------------------------------------------------
async def test_async_agent_runs_max_concurrency_rollouts_at_once(db: agl.SqliteStore) -> None:
    limit = 50
    in_flight = peak = 0
    full = asyncio.Event()

    @agl.rollout
    async def agent(task: Any) -> float:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight >= limit:
            full.set()
        try:
            # Hold the slot until `limit` rollouts run at once (bounded: fails the rollout if that never happens).
            await asyncio.wait_for(full.wait(), PATIENCE)
        finally:
            in_flight -= 1
        return 1.0

    rollouts = await db.enqueue_many_rollouts([agl.RolloutRequest(input=i) for i in range(2 * limit + 20)])
    async with running(agent, db, max_concurrency=limit):
        done = await finished(db, rollouts)
    assert peak == limit
    assert [r.status for r in done] == [RolloutStatus.SUCCEEDED] * len(rollouts)


async def test_sync_agent_runs_in_threads_and_its_rewards_land_in_its_own_rollout(db: agl.SqliteStore) -> None:
    at_once = 8  # more than the default thread pool has workers on a 2-core machine
    together = threading.Barrier(at_once, timeout=10)
    agent_threads: set[int] = set()

    @agl.rollout
    def agent(task: int) -> None:
        agent_threads.add(threading.get_ident())
        together.wait()  # `at_once` agents run at the same time, each in its own thread
        agl.emit_reward(float(task))
        # A thread the agent starts itself traces into the same rollout too (agl.Thread carries the context).
        helper = agl.Thread(target=agl.emit_message, args=(f"helper of task {task}",))
        helper.start()
        helper.join()

    rollouts = await db.enqueue_many_rollouts([agl.RolloutRequest(input=i) for i in range(2 * at_once)])
    async with running(agent, db, max_concurrency=at_once):
        done = await finished(db, rollouts)
    assert [r.status for r in done] == [RolloutStatus.SUCCEEDED] * len(rollouts)
    assert len(agent_threads) >= at_once and threading.get_ident() not in agent_threads
    for i, rollout in enumerate(rollouts):
        spans = await db.query_spans(rollout.rollout_id, "latest")
        assert final_reward(spans) == float(i)
        (message,) = named(spans, semconv.SPAN_MESSAGE)
        assert message.attributes[semconv.AGL_MESSAGE_BODY] == f"helper of task {i}"


# --- 4. heartbeats -------------------------------------------------------------------------------
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


# --- 6. a runner process killed with -9 ----------------------------------------------------------
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


# --- 7. spans are written before the rollout finishes --------------------------------------------
async def test_rollout_finishes_only_after_every_span_it_emitted_is_written(db: agl.SqliteStore) -> None:
    per_rollout = 1000

    @agl.rollout
    async def chatty(task: int) -> float:
        for i in range(per_rollout):
            agl.emit_message(f"rollout {task} step {i}")
            if i % 100 == 0:
                await asyncio.sleep(0)  # interleave with the other rollouts
        return 1.0

    rollouts = await db.enqueue_many_rollouts([agl.RolloutRequest(input=i) for i in range(3)])
    async with running(chatty, db):
        await finished(db, rollouts)
        # Read while the runner still runs: nothing may be left to a later flush.
        spans = [await db.query_spans(r.rollout_id, "latest") for r in rollouts]
        statistics = await db.statistics()
    for task, rollout_spans in enumerate(spans):
        messages = [s.attributes[semconv.AGL_MESSAGE_BODY] for s in named(rollout_spans, semconv.SPAN_MESSAGE)]
        assert messages == [f"rollout {task} step {i}" for i in range(per_rollout)]
        assert final_reward(rollout_spans) == 1.0
        assert len(rollout_spans) == per_rollout + 2  # the messages, the reward, the runner's root span
    assert statistics.spans == 3 * (per_rollout + 2)
    assert statistics.spans_dropped == 0
