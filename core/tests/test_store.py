"""Behaviour every store backend must show: the queue, the rollout / attempt lifecycle, waiting for rollouts
(what stores keep and report: ``test_store_records.py``)."""

from __future__ import annotations

import asyncio

import pytest
from conftest import make_span

import agentlightning as agl
from agentlightning import AttemptStatus, RolloutStatus

pytestmark = pytest.mark.asyncio


async def until(
    store: agl.LightningStore, rollout_id: str, *statuses: RolloutStatus, timeout: float = 10.0
) -> agl.Rollout:
    """Poll until the rollout reaches one of ``statuses`` (used for the store's own timers)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rollout = await store.get_rollout_by_id(rollout_id)
        if rollout.status in statuses or asyncio.get_running_loop().time() > deadline:
            return rollout
        await asyncio.sleep(0.02)


# --- queue -------------------------------------------------------------------------------------
async def test_enqueued_rollouts_are_dequeued_in_order_with_a_new_attempt(store: agl.LightningStore) -> None:
    first = await store.enqueue_rollout({"q": 1}, mode=agl.RolloutMode.TRAIN, metadata={"group": "g"})
    second = await store.enqueue_rollout({"q": 2})
    assert first.status == RolloutStatus.QUEUING and first.input == {"q": 1}

    got = await store.dequeue_rollout(worker_id="w1")
    assert got is not None and got.rollout_id == first.rollout_id
    assert got.status == RolloutStatus.PREPARING and got.mode == agl.RolloutMode.TRAIN
    assert got.metadata == {"group": "g"}
    assert got.attempt.sequence_id == 1 and got.attempt.status == AttemptStatus.PREPARING
    assert got.attempt.worker_id == "w1"

    got2 = await store.dequeue_rollout()
    assert got2 is not None and got2.rollout_id == second.rollout_id
    assert await store.dequeue_rollout() is None


async def test_enqueue_many_keeps_order_and_config(store: agl.LightningStore) -> None:
    config = agl.RolloutConfig(timeout_seconds=30, max_attempts=3)
    requests = [agl.RolloutRequest(input=i, config=config) for i in range(5)]
    rollouts = await store.enqueue_many_rollouts(requests)
    assert [r.input for r in rollouts] == list(range(5))
    dequeued = [await store.dequeue_rollout() for _ in range(5)]
    assert [d.input for d in dequeued if d] == list(range(5))
    assert all(d is not None and d.config == config for d in dequeued)


async def test_concurrent_workers_never_get_the_same_rollout(store: agl.LightningStore) -> None:
    await store.enqueue_many_rollouts([agl.RolloutRequest(input=i) for i in range(60)])

    async def worker(name: str) -> list[str]:
        got = []
        while (rollout := await store.dequeue_rollout(worker_id=name)) is not None:
            got.append(rollout.rollout_id)
        return got

    results = await asyncio.gather(*(worker(f"w{i}") for i in range(12)))
    taken = [rid for result in results for rid in result]
    assert len(taken) == 60 and len(set(taken)) == 60


async def test_dequeue_many_takes_up_to_limit_in_queue_order(store: agl.LightningStore) -> None:
    config = agl.RolloutConfig(max_attempts=2, retry_on=[AttemptStatus.FAILED])
    queued = await store.enqueue_many_rollouts([agl.RolloutRequest(input=i, config=config) for i in range(5)])
    first = await store.dequeue_many_rollouts(3, worker_id="w1")
    assert [r.rollout_id for r in first] == [r.rollout_id for r in queued[:3]]
    assert all(r.attempt.worker_id == "w1" and r.attempt.status == AttemptStatus.PREPARING for r in first)
    assert len({r.attempt.attempt_id for r in first}) == 3

    # A requeued rollout comes first; asking for more than is queued takes what there is.
    await store.update_attempt(first[1].rollout_id, first[1].attempt.attempt_id, status=AttemptStatus.FAILED)
    rest = await store.dequeue_many_rollouts(10)
    assert [r.rollout_id for r in rest] == [first[1].rollout_id, queued[3].rollout_id, queued[4].rollout_id]
    assert rest[0].attempt.sequence_id == 2
    assert await store.dequeue_many_rollouts(10) == []


async def test_concurrent_dequeue_many_never_hands_out_a_rollout_twice(store: agl.LightningStore) -> None:
    await store.enqueue_many_rollouts([agl.RolloutRequest(input=i) for i in range(60)])

    async def worker(name: str) -> list[str]:
        got: list[str] = []
        while batch := await store.dequeue_many_rollouts(7, worker_id=name):
            got += [r.rollout_id for r in batch]
        return got

    taken = [rid for result in await asyncio.gather(*(worker(f"w{i}") for i in range(6))) for rid in result]
    assert len(taken) == 60 and len(set(taken)) == 60


async def test_waiting_dequeue_takes_a_rollout_queued_while_it_waits(store: agl.LightningStore) -> None:
    waiting = asyncio.create_task(store.dequeue_many_rollouts(4, worker_id="w", wait=120))
    await asyncio.sleep(0.3)
    assert not waiting.done()  # the queue is empty: it waits
    queued = await store.enqueue_many_rollouts([agl.RolloutRequest(input="a"), agl.RolloutRequest(input="b")])
    got = await asyncio.wait_for(waiting, 60)  # woken by the enqueue, long before its 120 s
    assert [r.rollout_id for r in got] == [r.rollout_id for r in queued]


async def test_waiting_dequeue_is_woken_by_a_requeue(store: agl.LightningStore) -> None:
    config = agl.RolloutConfig(max_attempts=2, retry_on=[AttemptStatus.FAILED])
    await store.enqueue_rollout("retried", config=config)
    (got,) = await store.dequeue_many_rollouts(1)
    waiting = asyncio.create_task(store.dequeue_many_rollouts(1, wait=120))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await store.update_attempt(got.rollout_id, got.attempt.attempt_id, status=AttemptStatus.FAILED)
    (again,) = await asyncio.wait_for(waiting, 60)
    assert again.rollout_id == got.rollout_id and again.attempt.sequence_id == 2


async def test_waiting_dequeue_on_an_empty_queue_returns_nothing_after_its_wait(store: agl.LightningStore) -> None:
    assert await store.dequeue_many_rollouts(3, wait=0.2) == []


@pytest.mark.parametrize(("limit", "wait"), [(0, 0.0), (-1, 0.0), (2, -1.0), (2, float("nan")), (2, float("inf"))])
async def test_dequeue_many_refuses_meaningless_arguments(store: agl.LightningStore, limit: int, wait: float) -> None:
    await store.enqueue_rollout("kept")
    with pytest.raises(ValueError, match="dequeue_many_rollouts"):
        await store.dequeue_many_rollouts(limit, wait=wait)
    assert (await store.dequeue_many_rollouts(5))[0].input == "kept"  # nothing was taken


# --- lifecycle ---------------------------------------------------------------------------------
async def test_first_span_starts_the_attempt_and_success_finishes_the_rollout(store: agl.LightningStore) -> None:
    await store.enqueue_rollout("task")
    got = await store.dequeue_rollout()
    assert got is not None
    await store.add_span(make_span(got.rollout_id, got.attempt.attempt_id))
    assert (await store.get_rollout_by_id(got.rollout_id)).status == RolloutStatus.RUNNING
    assert (await store.query_attempts(got.rollout_id))[0].status == AttemptStatus.RUNNING

    attempt = await store.update_attempt(got.rollout_id, got.attempt.attempt_id, status=AttemptStatus.SUCCEEDED)
    assert attempt.status == AttemptStatus.SUCCEEDED and attempt.end_time is not None
    rollout = await store.get_rollout_by_id(got.rollout_id)
    assert rollout.status == RolloutStatus.SUCCEEDED and rollout.end_time is not None and rollout.is_finished


async def test_failed_attempt_is_retried_first_then_the_rollout_fails(store: agl.LightningStore) -> None:
    config = agl.RolloutConfig(max_attempts=2, retry_on=[AttemptStatus.FAILED])
    retried = await store.enqueue_rollout("retried", config=config)
    waiting = await store.enqueue_rollout("waiting")

    got = await store.dequeue_rollout()
    assert got is not None and got.rollout_id == retried.rollout_id
    await store.update_attempt(got.rollout_id, got.attempt.attempt_id, status=AttemptStatus.FAILED)
    assert (await store.get_rollout_by_id(retried.rollout_id)).status == RolloutStatus.REQUEUING

    again = await store.dequeue_rollout()  # a requeued rollout goes to the front
    assert again is not None and again.rollout_id == retried.rollout_id
    assert again.attempt.sequence_id == 2 and again.num_attempts == 2
    await store.update_attempt(again.rollout_id, again.attempt.attempt_id, status=AttemptStatus.FAILED)
    assert (await store.get_rollout_by_id(retried.rollout_id)).status == RolloutStatus.FAILED

    last = await store.dequeue_rollout()
    assert last is not None and last.rollout_id == waiting.rollout_id
    attempts = await store.query_attempts(retried.rollout_id)
    assert [a.status for a in attempts] == [AttemptStatus.FAILED, AttemptStatus.FAILED]


async def test_failures_not_listed_in_retry_on_fail_at_once(store: agl.LightningStore) -> None:
    config = agl.RolloutConfig(max_attempts=5, retry_on=[AttemptStatus.UNRESPONSIVE])
    await store.enqueue_rollout("x", config=config)
    got = await store.dequeue_rollout()
    assert got is not None
    await store.update_attempt(got.rollout_id, got.attempt.attempt_id, status=AttemptStatus.FAILED)
    assert (await store.get_rollout_by_id(got.rollout_id)).status == RolloutStatus.FAILED
    assert await store.dequeue_rollout() is None


async def test_attempt_running_too_long_times_out_and_is_retried(store: agl.LightningStore) -> None:
    config = agl.RolloutConfig(timeout_seconds=0.2, max_attempts=2)
    await store.enqueue_rollout("slow", config=config)
    got = await store.dequeue_rollout()
    assert got is not None
    rollout = await until(store, got.rollout_id, RolloutStatus.REQUEUING)
    assert rollout.status == RolloutStatus.REQUEUING
    assert (await store.query_attempts(got.rollout_id))[0].status == AttemptStatus.TIMEOUT

    second = await store.dequeue_rollout()
    assert second is not None and second.attempt.sequence_id == 2
    rollout = await until(store, got.rollout_id, RolloutStatus.FAILED)
    assert rollout.status == RolloutStatus.FAILED


async def test_heartbeats_keep_an_attempt_alive_and_silence_makes_it_unresponsive(store: agl.LightningStore) -> None:
    config = agl.RolloutConfig(unresponsive_seconds=0.3)
    await store.enqueue_rollout("x", config=config)
    got = await store.dequeue_rollout()
    assert got is not None
    for _ in range(8):  # 0.8 s of heartbeats, well past unresponsive_seconds
        attempt = await store.heartbeat(got.rollout_id, got.attempt.attempt_id)
        assert attempt.status == AttemptStatus.PREPARING
        await asyncio.sleep(0.1)
    rollout = await until(store, got.rollout_id, RolloutStatus.FAILED)
    assert rollout.status == RolloutStatus.FAILED
    # The late worker learns from its heartbeat that it was given up on, and cannot revive the attempt.
    attempt = await store.heartbeat(got.rollout_id, got.attempt.attempt_id)
    assert attempt.status == AttemptStatus.UNRESPONSIVE
    with pytest.raises(agl.InvalidStatusTransition, match="already ended as 'unresponsive'"):
        await store.update_attempt(got.rollout_id, got.attempt.attempt_id, status=AttemptStatus.SUCCEEDED)
    # Its late spans are still kept.
    await store.add_span(make_span(got.rollout_id, got.attempt.attempt_id, "late"))
    assert [s.name for s in await store.query_spans(got.rollout_id)] == ["late"]


async def test_cancelling_a_rollout_cancels_its_attempt(store: agl.LightningStore) -> None:
    await store.enqueue_rollout("x")
    got = await store.dequeue_rollout()
    assert got is not None
    rollout = await store.update_rollout(got.rollout_id, status=RolloutStatus.CANCELLED)
    assert rollout.status == RolloutStatus.CANCELLED
    assert (await store.query_attempts(got.rollout_id))[0].status == AttemptStatus.CANCELLED
    with pytest.raises(agl.InvalidStatusTransition):
        await store.update_rollout(got.rollout_id, status=RolloutStatus.SUCCEEDED)


async def test_a_finished_rollout_can_be_queued_again(store: agl.LightningStore) -> None:
    await store.enqueue_rollout("x")
    got = await store.dequeue_rollout()
    assert got is not None
    await store.update_attempt(got.rollout_id, got.attempt.attempt_id, status=AttemptStatus.SUCCEEDED)
    requeued = await store.update_rollout(got.rollout_id, status=RolloutStatus.QUEUING)
    assert requeued.status == RolloutStatus.QUEUING and requeued.end_time is None
    again = await store.dequeue_rollout()
    assert again is not None and again.rollout_id == got.rollout_id and again.attempt.sequence_id == 2


async def test_statuses_reached_through_attempts_cannot_be_set_directly(store: agl.LightningStore) -> None:
    rollout = await store.enqueue_rollout("x")
    with pytest.raises(agl.InvalidStatusTransition, match="reached through its attempts"):
        await store.update_rollout(rollout.rollout_id, status=RolloutStatus.RUNNING)
    got = await store.dequeue_rollout()
    assert got is not None
    with pytest.raises(agl.InvalidStatusTransition, match="cannot go back"):
        await store.update_attempt(got.rollout_id, got.attempt.attempt_id, status=AttemptStatus.RUNNING)
        await store.update_attempt(got.rollout_id, got.attempt.attempt_id, status=AttemptStatus.PREPARING)


async def test_start_rollout_and_start_attempt(store: agl.LightningStore) -> None:
    started = await store.start_rollout(agl.RolloutRequest(input="direct", mode=agl.RolloutMode.TEST), worker_id="w")
    assert started.status == RolloutStatus.PREPARING and started.attempt.sequence_id == 1
    assert await store.dequeue_rollout() is None  # never queued
    with pytest.raises(agl.InvalidStatusTransition, match="still has an active attempt"):
        await store.start_attempt(started.rollout_id)
    await store.update_attempt(started.rollout_id, started.attempt.attempt_id, status=AttemptStatus.FAILED)
    retry = await store.start_attempt(started.rollout_id, worker_id="w2")
    assert retry.attempt.sequence_id == 2 and retry.attempt.worker_id == "w2"
    assert retry.status == RolloutStatus.PREPARING


async def test_update_rollout_fields(store: agl.LightningStore) -> None:
    rollout = await store.enqueue_rollout("x")
    config = agl.RolloutConfig(max_attempts=4)
    updated = await store.update_rollout(
        rollout.rollout_id, mode=agl.RolloutMode.VAL, resources_id="rs-1", config=config, metadata={"k": [1, 2]}
    )
    assert updated.mode == agl.RolloutMode.VAL and updated.resources_id == "rs-1"
    assert updated.config == config and updated.metadata == {"k": [1, 2]}
    assert await store.get_rollout_by_id(rollout.rollout_id) == updated


async def test_unknown_ids_raise_clear_errors(store: agl.LightningStore) -> None:
    with pytest.raises(agl.RolloutNotFound, match="ro-missing"):
        await store.get_rollout_by_id("ro-missing")
    with pytest.raises(agl.RolloutNotFound):
        await store.query_spans("ro-missing")
    rollout = await store.enqueue_rollout("x")
    with pytest.raises(agl.AttemptNotFound, match="at-missing"):
        await store.update_attempt(rollout.rollout_id, "at-missing", status=AttemptStatus.FAILED)
    with pytest.raises(agl.AttemptNotFound):
        await store.add_span(make_span(rollout.rollout_id, "at-missing"))
    with pytest.raises(agl.ResourcesNotFound):
        await store.get_resources_by_id("rs-missing")


# --- waiting -----------------------------------------------------------------------------------
async def test_wait_for_rollouts_returns_when_they_finish(store: agl.LightningStore) -> None:
    ids = [r.rollout_id for r in await store.enqueue_many_rollouts([agl.RolloutRequest(input=i) for i in range(3)])]

    async def finish_all() -> None:
        await asyncio.sleep(0.1)
        while (got := await store.dequeue_rollout()) is not None:
            await store.update_attempt(got.rollout_id, got.attempt.attempt_id, status=AttemptStatus.SUCCEEDED)

    finisher = asyncio.create_task(finish_all())
    finished = await store.wait_for_rollouts(ids, timeout=60)
    await finisher
    assert [r.rollout_id for r in finished] == ids
    assert all(r.status == RolloutStatus.SUCCEEDED for r in finished)


async def test_wait_for_rollouts_gives_the_finished_ones_at_timeout(store: agl.LightningStore) -> None:
    a = await store.enqueue_rollout("a")
    b = await store.enqueue_rollout("b")
    got = await store.dequeue_rollout()
    assert got is not None and got.rollout_id == a.rollout_id
    await store.update_attempt(got.rollout_id, got.attempt.attempt_id, status=AttemptStatus.SUCCEEDED)
    finished = await store.wait_for_rollouts([a.rollout_id, b.rollout_id], timeout=0.2)
    assert [r.rollout_id for r in finished] == [a.rollout_id]
    with pytest.raises(agl.RolloutNotFound):
        await store.wait_for_rollouts(["ro-missing"], timeout=0)


async def test_wait_is_woken_by_the_store_timing_an_attempt_out(store: agl.LightningStore) -> None:
    await store.enqueue_rollout("x", config=agl.RolloutConfig(timeout_seconds=0.2))
    got = await store.dequeue_rollout()
    assert got is not None
    finished = await store.wait_for_rollouts([got.rollout_id], timeout=60)
    assert [r.status for r in finished] == [RolloutStatus.FAILED]
