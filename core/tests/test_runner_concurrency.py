"""The runner runs rollouts concurrently: async agents up to max_concurrency at once, sync agents in threads, each
agent's spans landing in its own rollout and written before the rollout finishes.

Everything runs against a real SQLite store (the ``db`` fixture). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from background_runner import PATIENCE, finished, named, running

import agentlightning as agl
from agentlightning import RolloutStatus, semconv
from agentlightning.reward import final_reward


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


# --- spans are written before the rollout finishes -----------------------------------------------
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
