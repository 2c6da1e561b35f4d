"""Behaviour every store backend must show: the queue, the rollout / attempt lifecycle, spans, resources."""

from __future__ import annotations

import asyncio
import threading

import pytest
from conftest import make_span

import agentlightning as agl
from agentlightning import AttemptStatus, RolloutStatus
from agentlightning.store.base import EncodedSpan

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


# --- spans -------------------------------------------------------------------------------------
async def test_spans_are_numbered_in_order_and_resending_does_not_duplicate(store: agl.LightningStore) -> None:
    await store.enqueue_rollout("x")
    got = await store.dequeue_rollout()
    assert got is not None
    rid, aid = got.rollout_id, got.attempt.attempt_id
    spans = [make_span(rid, aid, f"s{i}", index=i, tokens=[1, 2, 3], score=0.5, ok=True) for i in range(5)]
    stored = await store.add_many_spans(spans[:3])
    assert [s.sequence_id for s in stored] == [1, 2, 3]
    stored = await store.add_many_spans(spans[2:])  # spans[2] again, as after a lost acknowledgement
    assert [s.sequence_id for s in stored] == [3, 4, 5]
    got_spans = await store.query_spans(rid)
    assert [s.name for s in got_spans] == ["s0", "s1", "s2", "s3", "s4"]
    assert [s.sequence_id for s in got_spans] == [1, 2, 3, 4, 5]
    assert got_spans[1].attributes == {"index": 1, "tokens": [1, 2, 3], "score": 0.5, "ok": True}
    assert got_spans[0] == spans[0].model_copy(update={"sequence_id": 1})


async def test_resent_encoded_spans_keep_their_numbers(store: agl.LightningStore) -> None:
    """The tracer's path: a batch resent after a lost acknowledgement, and a span twice in one batch, are stored once."""
    await store.enqueue_rollout("x")
    got = await store.dequeue_rollout()
    assert got is not None
    rid, aid = got.rollout_id, got.attempt.attempt_id
    encoded = [EncodedSpan.of(make_span(rid, aid, f"s{i}")) for i in range(5)]
    assert await store.add_encoded_spans(encoded[:3]) == [1, 2, 3]
    assert await store.add_encoded_spans(encoded[2:]) == [3, 4, 5]
    assert await store.add_encoded_spans(encoded[:2]) == [1, 2]
    again = EncodedSpan.of(make_span(rid, aid, "s5"))
    assert await store.add_encoded_spans([again, again]) == [6, 6]
    got_spans = await store.query_spans(rid)
    assert [(s.name, s.sequence_id) for s in got_spans] == [(f"s{i}", i + 1) for i in range(6)]


async def test_spans_of_each_attempt_and_of_the_latest(store: agl.LightningStore) -> None:
    await store.enqueue_rollout("x", config=agl.RolloutConfig(max_attempts=2))
    first = await store.dequeue_rollout()
    assert first is not None
    await store.add_span(make_span(first.rollout_id, first.attempt.attempt_id, "a1"))
    await store.update_attempt(first.rollout_id, first.attempt.attempt_id, status=AttemptStatus.FAILED)
    second = await store.dequeue_rollout()
    assert second is not None
    await store.add_span(make_span(second.rollout_id, second.attempt.attempt_id, "a2"))
    assert [s.name for s in await store.query_spans(first.rollout_id)] == ["a1", "a2"]
    assert [s.name for s in await store.query_spans(first.rollout_id, "latest")] == ["a2"]
    assert [s.name for s in await store.query_spans(first.rollout_id, first.attempt.attempt_id)] == ["a1"]


async def test_submitted_spans_are_seen_by_every_later_operation(store: agl.LightningStore) -> None:
    """What the gateway relies on: once ``submit_spans`` returns, a rollout finished next holds the spans."""
    await store.enqueue_rollout("x")
    got = await store.dequeue_rollout()
    assert got is not None
    rid, aid = got.rollout_id, got.attempt.attempt_id
    written = await store.submit_spans([make_span(rid, aid, f"call{i}") for i in range(3)])
    await store.update_attempt(rid, aid, status=AttemptStatus.SUCCEEDED)
    assert [s.name for s in await store.query_spans(rid)] == ["call0", "call1", "call2"]
    assert [s.sequence_id for s in await written] == [1, 2, 3]
    refused = await store.submit_spans([make_span(rid, "at-missing")])
    with pytest.raises(agl.AttemptNotFound):
        await refused


async def test_a_batch_with_a_bad_span_writes_nothing(store: agl.LightningStore) -> None:
    await store.enqueue_rollout("x")
    got = await store.dequeue_rollout()
    assert got is not None
    good = make_span(got.rollout_id, got.attempt.attempt_id)
    bad = make_span(got.rollout_id, "at-missing")
    with pytest.raises(agl.AttemptNotFound):
        await store.add_many_spans([good, bad])
    assert await store.query_spans(got.rollout_id) == []


async def test_span_with_events_links_status_and_resource_round_trips(store: agl.LightningStore) -> None:
    await store.enqueue_rollout("x")
    got = await store.dequeue_rollout()
    assert got is not None
    span = make_span(got.rollout_id, got.attempt.attempt_id).model_copy(
        update={
            "kind": agl.SpanKind.CLIENT,
            "parent_id": "ab" * 8,
            "events": [agl.SpanEvent(name="exception", timestamp=1.5, attributes={"exception.type": "ValueError"})],
            "links": [agl.SpanLink(trace_id="cd" * 16, span_id="ef" * 8)],
            "status": agl.SpanStatus(status_code=agl.StatusCode.ERROR, description="boom"),
            "resource": {"service.name": "agent"},
        }
    )
    await store.add_span(span)
    (back,) = await store.query_spans(got.rollout_id)
    assert back == span.model_copy(update={"sequence_id": 1})


# --- resources ---------------------------------------------------------------------------------
async def test_resources_are_versioned_and_keep_their_types(store: agl.LightningStore) -> None:
    assert await store.get_latest_resources() is None
    llm = agl.LLM(base_url="http://127.0.0.1:8000/v1", model="m", sampling_parameters={"temperature": 0.7})
    prompt = agl.PromptTemplate(template="Hi {name}", engine="f-string")
    other = agl.GenericResource(resource_type="checkpoint", path="/ckpt/1", step=3)  # type: ignore[call-arg]
    v1 = await store.add_resources({"llm": llm, "prompt": prompt, "ckpt": other})
    v2 = await store.add_resources({"llm": llm.model_copy(update={"model": "m2"})}, resources_id="rs-custom")
    assert (v1.version, v2.version) == (1, 2) and v2.resources_id == "rs-custom"
    latest = await store.get_latest_resources()
    assert latest is not None and latest.resources_id == "rs-custom"
    again = await store.get_resources_by_id(v1.resources_id)
    assert again.get("llm", agl.LLM) == llm
    assert again.get("prompt", agl.PromptTemplate).format(name="Ada") == "Hi Ada"
    ckpt = again.resources["ckpt"]
    assert ckpt.resource_type == "checkpoint" and ckpt.model_dump()["path"] == "/ckpt/1"
    with pytest.raises(agl.StoreConflict):
        await store.add_resources({"llm": llm}, resources_id="rs-custom")


# --- queries and statistics --------------------------------------------------------------------
async def test_query_rollouts_filters(store: agl.LightningStore) -> None:
    train = await store.enqueue_many_rollouts(
        [agl.RolloutRequest(input=i, mode=agl.RolloutMode.TRAIN) for i in range(4)]
    )
    val = await store.enqueue_rollout("v", mode=agl.RolloutMode.VAL)
    got = await store.dequeue_rollout()
    assert got is not None
    await store.update_attempt(got.rollout_id, got.attempt.attempt_id, status=AttemptStatus.SUCCEEDED)

    assert len(await store.query_rollouts()) == 5
    assert [r.rollout_id for r in await store.query_rollouts(mode=agl.RolloutMode.VAL)] == [val.rollout_id]
    assert [r.rollout_id for r in await store.query_rollouts(status=[RolloutStatus.SUCCEEDED])] == [train[0].rollout_id]
    some = await store.query_rollouts(rollout_ids=[train[1].rollout_id, val.rollout_id])
    assert {r.rollout_id for r in some} == {train[1].rollout_id, val.rollout_id}
    page = await store.query_rollouts(limit=2, offset=1)
    assert [r.rollout_id for r in page] == [train[1].rollout_id, train[2].rollout_id]
    newest = await store.query_rollouts(limit=1, newest_first=True)
    assert [r.rollout_id for r in newest] == [val.rollout_id]


async def test_statistics_count_what_the_store_holds(store: agl.LightningStore) -> None:
    await store.enqueue_many_rollouts([agl.RolloutRequest(input=i) for i in range(3)])
    got = await store.dequeue_rollout()
    assert got is not None
    await store.add_many_spans([make_span(got.rollout_id, got.attempt.attempt_id) for _ in range(4)])
    await store.add_resources({"p": agl.PromptTemplate(template="x")})
    stats = await store.statistics()
    assert stats.rollouts[RolloutStatus.QUEUING] == 2 and stats.rollouts[RolloutStatus.RUNNING] == 1
    assert stats.attempts[AttemptStatus.RUNNING] == 1
    assert (stats.spans, stats.resources_versions, stats.queue_length) == (4, 1, 2)


async def test_a_store_serves_several_event_loops_at_once(store: agl.LightningStore) -> None:
    await store.enqueue_many_rollouts([agl.RolloutRequest(input=i) for i in range(40)])
    taken: list[str] = []
    lock = threading.Lock()

    def thread_worker() -> None:
        async def drain() -> None:
            while (got := await store.dequeue_rollout()) is not None:
                await store.update_attempt(got.rollout_id, got.attempt.attempt_id, status=AttemptStatus.SUCCEEDED)
                with lock:
                    taken.append(got.rollout_id)

        asyncio.run(drain())

    threads = [threading.Thread(target=thread_worker) for _ in range(3)]
    for t in threads:
        t.start()
    await asyncio.get_running_loop().run_in_executor(None, lambda: [t.join() for t in threads])
    assert len(taken) == 40 and len(set(taken)) == 40
    assert (await store.statistics()).rollouts[RolloutStatus.SUCCEEDED] == 40


async def test_numbers_json_cannot_hold_are_kept_as_null_the_same_by_every_store(store: agl.LightningStore) -> None:
    # NaN and the infinities (a score gone wrong, a dataset's missing value) have no JSON form: a store keeps them as
    # null, in-process as over HTTP, and its queries over the JSON it keeps still work.
    odd = {"nan": float("nan"), "inf": float("inf"), "nested": [1.5, {"ninf": float("-inf")}], "ok": 2.5}
    rollout = await store.start_rollout(agl.RolloutRequest(input=odd, metadata={"score": float("nan")}))
    await store.update_attempt(
        rollout.rollout_id, rollout.attempt.attempt_id, metadata={"score": float("inf"), "spans_dropped": 2}
    )
    await store.update_rollout(rollout.rollout_id, metadata={"score": float("-inf"), "tries": [float("nan"), 1]})
    got = await store.get_rollout_by_id(rollout.rollout_id)
    assert got.input == {"nan": None, "inf": None, "nested": [1.5, {"ninf": None}], "ok": 2.5}
    assert got.metadata == {"score": None, "tries": [None, 1]}
    (attempt,) = await store.query_attempts(rollout.rollout_id)
    assert attempt.metadata == {"score": None, "spans_dropped": 2}
    assert (await store.statistics()).spans_dropped == 2


async def test_statistics_add_up_the_spans_runners_could_not_write(store: agl.LightningStore) -> None:
    await store.enqueue_many_rollouts([agl.RolloutRequest(input=i) for i in range(2)])
    for dropped in (3, 4):
        got = await store.dequeue_rollout()
        assert got is not None
        await store.update_attempt(
            got.rollout_id, got.attempt.attempt_id, status=AttemptStatus.SUCCEEDED, metadata={"spans_dropped": dropped}
        )
    assert (await store.statistics()).spans_dropped == 7
