"""Tracing: emitters, operations, OpenTelemetry spans, context propagation, batching without loss."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import pydantic
import pytest

import agentlightning as agl
from agentlightning import semconv
from agentlightning.tracer import Tracer, begin_span


@pytest.fixture
async def traced() -> AsyncIterator[tuple[agl.LightningStore, Tracer, agl.AttemptedRollout]]:
    store = agl.InMemoryStore()
    tracer = Tracer(store)
    rollout = await store.start_rollout(agl.RolloutRequest(input="task"))
    yield store, tracer, rollout
    tracer.close()
    await store.close()


async def spans_of(store: agl.LightningStore, tracer: Tracer, rollout: agl.AttemptedRollout) -> list[agl.Span]:
    await tracer.flush()
    return await store.query_spans(rollout.rollout_id)


def by_name(spans: list[agl.Span], name: str) -> agl.Span:
    (span,) = [s for s in spans if s.name == name]
    return span


async def test_emitters_record_their_spans_under_the_rollout_root(traced: Any) -> None:
    store, tracer, rollout = traced
    async with tracer.trace(rollout.rollout_id, rollout.attempt.attempt_id):
        agl.emit_message("thinking", attributes={"step": 1})
        agl.emit_object({"plan": ["a", "b"]})
        agl.emit_annotation({"difficulty": "hard", "score": 0.5})
        agl.emit_reward({"accuracy": 1.0, "brevity": -0.5}, primary="accuracy")
        try:
            raise ValueError("bad tool input")
        except ValueError as exc:
            agl.emit_exception(exc)
    spans = await spans_of(store, tracer, rollout)
    root = by_name(spans, "agentlightning.rollout")
    assert all(s.parent_id == root.span_id and s.trace_id == root.trace_id for s in spans if s is not root)
    assert by_name(spans, semconv.SPAN_MESSAGE).attributes == {semconv.AGL_MESSAGE_BODY: "thinking", "step": 1}
    assert by_name(spans, semconv.SPAN_OBJECT).attributes[semconv.AGL_OBJECT_JSON] == '{"plan":["a","b"]}'
    annotation = by_name(spans, semconv.SPAN_ANNOTATION).attributes
    assert annotation == {"agentlightning.annotation.difficulty": "hard", "agentlightning.annotation.score": 0.5}
    reward = by_name(spans, semconv.SPAN_REWARD).attributes
    assert reward[semconv.AGL_REWARD_VALUE] == 1.0 and reward[semconv.AGL_REWARD_NAME] == "accuracy"
    assert reward[semconv.AGL_REWARD_VALUES_PREFIX + "brevity"] == -0.5
    exception = by_name(spans, semconv.SPAN_EXCEPTION)
    assert exception.status.status_code == agl.StatusCode.ERROR
    assert exception.attributes[semconv.EXCEPTION_TYPE] == "ValueError"
    assert "bad tool input" in str(exception.attributes[semconv.EXCEPTION_STACKTRACE])
    assert [s.sequence_id for s in spans] == list(range(1, len(spans) + 1))


async def test_emitters_outside_a_rollout_raise_or_are_ignored_when_asked() -> None:
    with pytest.raises(agl.NoActiveRollout, match="outside a rollout"):
        agl.emit_reward(1.0)
    agl.set_emitters_outside_rollout("ignore")
    try:
        agl.emit_reward(1.0)
        agl.emit_message("nobody hears this")
        with agl.operation(name="step"):
            pass
    finally:
        agl.set_emitters_outside_rollout("raise")


async def test_bad_emitter_arguments_fail_at_the_call(traced: Any) -> None:
    store, tracer, rollout = traced
    async with tracer.trace(rollout.rollout_id, rollout.attempt.attempt_id):
        with pytest.raises(TypeError, match="finite number"):
            agl.emit_reward(float("nan"))
        with pytest.raises(TypeError, match="finite number"):
            agl.emit_reward("1.0")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="primary reward 'x'"):
            agl.emit_reward({"a": 1.0}, primary="x")
        with pytest.raises(TypeError, match="Span attributes"):
            agl.emit_message("m", attributes={"nested": {"a": 1}})  # type: ignore[dict-item]
        with pytest.raises(TypeError, match="JSON-serialisable"):
            agl.emit_object(object())
    assert [s.name for s in await spans_of(store, tracer, rollout)] == ["agentlightning.rollout"]


async def test_operations_record_inputs_outputs_and_nest(traced: Any) -> None:
    store, tracer, rollout = traced

    @agl.operation
    def plan(goal: str, steps: int = 2) -> list[str]:
        agl.emit_message("inside plan")
        return [goal] * steps

    @agl.operation(name="act")
    async def act(step: str) -> str:
        return step.upper()

    @agl.reward_computation
    def judge(answer: str) -> float:
        return 1.0

    async with tracer.trace(rollout.rollout_id, rollout.attempt.attempt_id):
        for step in plan("x"):
            await act(step)
        with agl.operation(name="summarise") as op:
            op.record_output({"done": True})
        judge("X")
    spans = await spans_of(store, tracer, rollout)
    planned = by_name(spans, "agentlightning.operation test_operations_record_inputs_outputs_and_nest.<locals>.plan")
    assert planned.attributes[semconv.AGL_OPERATION_INPUT] == '{"goal":"x"}'
    assert planned.attributes[semconv.AGL_OPERATION_OUTPUT] == '["x","x"]'
    assert by_name(spans, semconv.SPAN_MESSAGE).parent_id == planned.span_id
    acts = [s for s in spans if s.name == "agentlightning.operation act"]
    assert len(acts) == 2 and acts[0].attributes[semconv.AGL_OPERATION_OUTPUT] == '"X"'
    assert (
        by_name(spans, "agentlightning.operation summarise").attributes[semconv.AGL_OPERATION_OUTPUT] == '{"done":true}'
    )
    judged = [s for s in spans if s.attributes.get(semconv.AGL_OPERATION_KIND) == semconv.OPERATION_KIND_REWARD]
    assert len(judged) == 1


async def test_spans_of_any_opentelemetry_instrumentation_land_in_the_store(traced: Any) -> None:
    from opentelemetry import trace

    store, tracer, rollout = traced
    other = trace.get_tracer("some.instrumentation")
    async with tracer.trace(rollout.rollout_id, rollout.attempt.attempt_id):
        with other.start_as_current_span("http request", attributes={"http.method": "POST"}) as span:
            span.add_event("retry", {"attempt": 2})
            agl.emit_reward(0.5)
    with other.start_as_current_span("outside any rollout"):
        pass
    spans = await spans_of(store, tracer, rollout)
    request = by_name(spans, "http request")
    assert request.attributes == {"http.method": "POST"} and request.events[0].attributes == {"attempt": 2}
    assert by_name(spans, semconv.SPAN_REWARD).parent_id == request.span_id
    assert "outside any rollout" not in {s.name for s in spans}


async def test_context_follows_tasks_and_project_threads_but_not_plain_threads(traced: Any) -> None:
    store, tracer, rollout = traced
    errors: list[BaseException] = []

    def in_thread(label: str) -> None:
        try:
            agl.emit_message(label)
        except BaseException as exc:
            errors.append(exc)

    async with tracer.trace(rollout.rollout_id, rollout.attempt.attempt_id):
        await asyncio.create_task(asyncio.sleep(0, result=None))
        await asyncio.gather(*(asyncio.create_task(_emit_later(f"task {i}")) for i in range(3)))
        await asyncio.to_thread(in_thread, "to_thread")
        worker = agl.Thread(target=in_thread, args=("agl.Thread",))
        worker.start()
        worker.join()
        plain = threading.Thread(target=in_thread, args=("plain thread",))
        plain.start()
        plain.join()
    bodies = {s.attributes.get(semconv.AGL_MESSAGE_BODY) for s in await spans_of(store, tracer, rollout)}
    assert {"task 0", "task 1", "task 2", "to_thread", "agl.Thread"} <= bodies
    assert "plain thread" not in bodies
    assert len(errors) == 1 and isinstance(errors[0], agl.NoActiveRollout)


async def _emit_later(label: str) -> None:
    await asyncio.sleep(0.01)
    agl.emit_message(label)


async def test_concurrent_rollouts_keep_their_own_spans(traced: Any) -> None:
    store, tracer, _ = traced
    rollouts = [await store.start_rollout(agl.RolloutRequest(input=i)) for i in range(20)]

    async def run(r: agl.AttemptedRollout) -> None:
        async with tracer.trace(r.rollout_id, r.attempt.attempt_id):
            for step in range(10):
                await asyncio.sleep(0)
                agl.emit_reward(float(r.input))  # type: ignore[arg-type]
                agl.emit_annotation({"step": step})

    await asyncio.gather(*(run(r) for r in rollouts))
    await tracer.flush()
    for r in rollouts:
        spans = await store.query_spans(r.rollout_id)
        rewards = [s.attributes[semconv.AGL_REWARD_VALUE] for s in spans if s.name == semconv.SPAN_REWARD]
        assert rewards == [float(r.input)] * 10  # type: ignore[arg-type]


class _FlakyStore(agl.InMemoryStore):
    """Refuses every span batch naming the attempt in ``refuse``."""

    refuse = ""

    async def add_encoded_spans(self, spans: Any) -> list[int]:
        if any(s.attempt_id == self.refuse for s in spans):
            raise agl.StoreError("refused for the test")
        return await super().add_encoded_spans(spans)


async def test_a_refused_batch_loses_only_its_own_attempts_spans_and_counts_them() -> None:
    store = _FlakyStore()
    tracer = Tracer(store)
    try:
        good = await store.start_rollout(agl.RolloutRequest(input="good"))
        bad = await store.start_rollout(agl.RolloutRequest(input="bad"))
        store.refuse = bad.attempt.attempt_id
        for r in (good, bad):
            with tracer.trace_sync(r.rollout_id, r.attempt.attempt_id):
                for _ in range(5):
                    agl.emit_message("m")
        await tracer.flush()
        assert len(await store.query_spans(good.rollout_id)) == 6
        assert await store.query_spans(bad.rollout_id) == []
        assert tracer.dropped(bad.attempt.attempt_id) == 6 and tracer.dropped(good.attempt.attempt_id) == 0
    finally:
        tracer.close()
        await store.close()


async def test_a_thousand_spans_in_one_rollout_all_arrive_in_order(traced: Any) -> None:
    store, tracer, rollout = traced
    async with tracer.trace(rollout.rollout_id, rollout.attempt.attempt_id):
        for i in range(1000):
            agl.emit_annotation({"i": i})
    spans = await spans_of(store, tracer, rollout)
    order = [s.attributes["agentlightning.annotation.i"] for s in spans if s.name == semconv.SPAN_ANNOTATION]
    assert order == list(range(1000))
    assert tracer.dropped(rollout.attempt.attempt_id) == 0


async def test_integration_spans_open_and_close_under_their_parents(traced: Any) -> None:
    """What integrations build on: spans opened at a framework's start event and recorded at its end."""
    store, tracer, rollout = traced
    assert begin_span("outside") is None  # no rollout: nothing to record into
    async with tracer.trace(rollout.rollout_id, rollout.attempt.attempt_id):
        chain = begin_span("chain", attributes={"step": 1})
        assert chain is not None
        tool = begin_span("tool", parent=chain, kind=agl.SpanKind.CLIENT)
        assert tool is not None
        with tool.current():
            agl.emit_reward(0.5)  # inside the tool: its child
        tool.end({"result": "42"}, error="tool failed")
        tool.end()  # a second end records nothing more
        chain.end()
    spans = await spans_of(store, tracer, rollout)
    root = by_name(spans, "agentlightning.rollout")
    recorded_chain, recorded_tool = by_name(spans, "chain"), by_name(spans, "tool")
    assert recorded_chain.parent_id == root.span_id and recorded_chain.attributes == {"step": 1}
    assert recorded_tool.parent_id == recorded_chain.span_id and recorded_tool.kind == agl.SpanKind.CLIENT
    assert (recorded_tool.status.status_code, recorded_tool.status.description) == (agl.StatusCode.ERROR, "tool failed")
    assert recorded_tool.attributes == {"result": "42"}
    assert by_name(spans, semconv.SPAN_REWARD).parent_id == recorded_tool.span_id
    assert {s.trace_id for s in spans} == {root.trace_id}
    assert tool.traceparent == f"00-{root.trace_id}-{recorded_tool.span_id}-01"


async def test_spans_without_a_parent_start_under_what_is_current_there(traced: Any) -> None:
    """Agent runs one after another, in rollouts one after another: each run's outermost span hangs under the
    span current where it starts (its rollout's root, or a span made current), never under an earlier one's."""
    store, tracer, first = traced
    second = await store.start_rollout(agl.RolloutRequest(input="another task"))
    for rollout, names in ((first, ("run 1", "run 2")), (second, ("run 3",))):
        async with tracer.trace(rollout.rollout_id, rollout.attempt.attempt_id):
            for name in names:
                run = begin_span(name)
                assert run is not None
                with run.current():
                    inner = begin_span(f"{name} inner")
                    assert inner is not None
                    inner.end()
                run.end()
    for rollout, names in ((first, ("run 1", "run 2")), (second, ("run 3",))):
        spans = await spans_of(store, tracer, rollout)
        root = by_name(spans, "agentlightning.rollout")
        for name in names:
            run_span = by_name(spans, name)
            assert (run_span.parent_id, run_span.trace_id) == (root.span_id, root.trace_id)
            inner_span = by_name(spans, f"{name} inner")
            assert (inner_span.parent_id, inner_span.trace_id) == (run_span.span_id, root.trace_id)


async def test_spans_read_back_as_recorded_and_those_a_span_cannot_hold_are_dropped_and_counted(traced: Any) -> None:
    store, tracer, rollout = traced
    plain = {
        "text": 'é ✓ "quoted"\n',
        "flag": True,
        "count": 3,
        "ratio": 0.1,
        "big": 2**70,
        "words": ["a", "b"],
        "flags": [True, False],
        "counts": [1, 2],
        "ratios": [0.5],
        "none_yet": [],
    }
    async with tracer.trace(rollout.rollout_id, rollout.attempt.attempt_id):
        for name, attributes in [
            ("plain", plain),
            ("tuple", {"words": ("a", "b")}),  # not a list, but a Span takes it as one
            ("mixed", {"values": [1, "a"]}),  # a list must hold one type
            ("nested", {"values": {"a": 1}}),
            ("key", {1: "not a str key"}),
        ]:
            span = begin_span(name, attributes=attributes, start_time=1_700_000_000)
            assert span is not None
            span.end(error="failed" if name == "plain" else None)
    spans = await spans_of(store, tracer, rollout)
    recorded = by_name(spans, "plain")
    assert recorded.attributes == plain and type(recorded.attributes["flag"]) is bool
    assert recorded.start_time == 1_700_000_000 and recorded.end_time is not None
    assert recorded.end_time >= recorded.start_time
    assert (recorded.status.status_code, recorded.status.description) == (agl.StatusCode.ERROR, "failed")
    assert by_name(spans, "tuple").attributes == {"words": ["a", "b"]}
    assert {s.name for s in spans} == {"agentlightning.rollout", "plain", "tuple"}
    assert tracer.dropped(rollout.attempt.attempt_id) == 3


def test_a_records_json_reads_back_as_the_span_the_model_makes() -> None:
    """The tracer writes a plainly valid record's JSON by hand; it must read back as the ``Span`` the pydantic model
    makes of the same fields, whatever the record holds, and leave what is not plainly valid to the model."""
    from agentlightning.tracer._encoding import SpanRecord, _encoded, _plain_record, _record_fields

    def record(**changes: Any) -> SpanRecord:
        fields: dict[str, Any] = {
            "rollout_id": "ro-1",
            "attempt_id": "at-1",
            "name": "chat model",
            "attributes": {"text": 'é ✓ "quoted"\n', "n": 3, "r": 0.1, "flag": False, "words": ["a"], "none": []},
            "start_time": 1_700_000_000.123456,
            "end_time": 1_700_000_001,
            "trace_id": "0" * 31 + "1",
            "span_id": "ab" * 8,
            "parent_id": "cd" * 8,
        }
        return SpanRecord(**{**fields, **changes})

    cases = [
        record(),
        record(parent_id=None, attributes={}),
        record(name='a "name" \\ with ✓', rollout_id='ro-"odd"\\', attempt_id="at-~!"),
        record(kind=agl.SpanKind.CLIENT, status=agl.StatusCode.ERROR, description='failed: "x"\n'),
        record(kind="server", status="ok"),  # a record may hold the enums' values
        record(events=[{"name": "e", "timestamp": 1_700_000_000.5, "attributes": {"k": "v"}}]),
        record(start_time=0.0, end_time=1e-05),
        record(attributes={"ratios": [0.5, 1.5], "flags": [True, False], "counts": [1, 2], "ratio": 2.5}),
    ]
    for case in cases:
        encoded = _plain_record(case)
        assert encoded is not None, case
        assert (encoded.rollout_id, encoded.attempt_id, encoded.span_id) == (
            case.rollout_id,
            case.attempt_id,
            case.span_id,
        )
        text = encoded.json
        assert agl.Span.model_validate_json(text) == agl.Span.model_validate(_record_fields(case)), case
    # Not plainly valid: the model decides (a tuple it takes as a list; a NaN it refuses).
    assert _plain_record(record(attributes={"words": ("a", "b")})) is None
    assert agl.Span.model_validate_json(
        _encoded(_record_fields(record(attributes={"words": ("a", "b")}))).json
    ).attributes == {"words": ["a", "b"]}
    for bad in (
        record(attributes={"r": float("nan")}),
        record(attributes={"r": float("inf"), "text": "t"}),
        record(attributes={"ratios": [0.5, float("nan")]}),
        record(attributes={"values": [True, 1]}),  # a bool is not an int here
        record(attributes={1: "a key that is no str"}),
        record(attributes={"nested": {"a": 1}}),
        record(span_id="not hex"),
        record(start_time=-1.0),
        record(name=3),
        record(rollout_id="has space"),
    ):
        assert _plain_record(bad) is None
    # A key that is no str, wherever it is, is refused by the JSON writer, and the model refuses it too.
    for fields in (
        _record_fields(record(attributes={1: "a"})),
        _record_fields(record(events=[{"name": "e", "timestamp": 1.0, "attributes": {2: "b"}}])),
        {**_record_fields(record()), "resource": {3: "c"}},
    ):
        with pytest.raises(pydantic.ValidationError):
            _encoded(fields)


def test_attribute_text_writes_what_integrations_hand_it_as_json() -> None:
    """Integrations write messages, tools and results with ``attribute_text``: text stays as it is, anything else
    becomes JSON, pydantic models and dataclasses as their fields, whatever else as its ``str``, and values orjson
    refuses are still written."""
    from agentlightning.tracer import attribute_text

    class Model(pydantic.BaseModel):
        role: str = "user"

    @dataclasses.dataclass
    class Call:
        name: str = "lookup"

    class Opaque:
        def __str__(self) -> str:
            return "opaque"

    assert attribute_text('{"already": "json"}') == '{"already": "json"}'
    value = {"m": Model(), "c": Call(), "items": [{"m": Model()}], 1: (2, 3), "o": Opaque(), "s": {4}, "r": 0.5}
    assert json.loads(attribute_text(value)) == {
        "m": {"role": "user"},
        "c": {"name": "lookup"},
        "items": [{"m": {"role": "user"}}],
        "1": [2, 3],
        "o": "opaque",
        "s": [4],
        "r": 0.5,
    }
    assert json.loads(attribute_text({"big": 2**70, "text": "é"})) == {"big": 2**70, "text": "é"}
