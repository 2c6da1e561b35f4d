"""What every store keeps and reports, the same for each backend: spans, resources, queries, statistics, and the
JSON values of rollouts."""

from __future__ import annotations

import asyncio
import threading

import pytest
from conftest import make_span

import agentlightning as agl
from agentlightning import AttemptStatus, RolloutStatus
from agentlightning.store.base import EncodedSpan

pytestmark = pytest.mark.asyncio


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
