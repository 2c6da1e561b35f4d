"""The LLM gateway: OpenAI clients call through it unchanged, and every call lands in its rollout with token ids."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai_upstream import create_upstream, detokenize

import agentlightning as agl
from agentlightning import semconv
from agentlightning.server.serve import HttpServer
from agentlightning.testing import store as store  # the fixture


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    server = HttpServer(create_upstream(), port=0).start()
    yield server.url + "/v1"
    server.stop()


@pytest.fixture
def gateway(upstream: str, store: agl.SqliteStore) -> Iterator[agl.Gateway]:
    with agl.Gateway(upstream, store) as gateway:
        yield gateway


def llm_spans(spans: list[agl.Span]) -> list[agl.Span]:
    return [s for s in spans if s.attributes.get(semconv.GEN_AI_OPERATION_NAME) == "chat"]


def received(spans: list[agl.Span]) -> list[Any]:
    return [json.loads(str(s.attributes[semconv.AGL_OBJECT_JSON])) for s in spans if s.name == semconv.SPAN_OBJECT]


@agl.rollout
def sync_agent(task: dict[str, Any], llm: agl.LLM) -> float:
    client = openai.OpenAI(base_url=llm.base_url, api_key="unused")
    if task.get("stream"):
        stream = client.chat.completions.create(
            model=llm.model, messages=[{"role": "user", "content": task["q"]}], stream=True
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    else:
        response = client.chat.completions.create(model=llm.model, messages=[{"role": "user", "content": task["q"]}])
        text = response.choices[0].message.content or ""
    agl.emit_object({"text": text})
    return 1.0


@agl.rollout
async def async_agent(task: dict[str, Any], llm: agl.LLM) -> float:
    client = openai.AsyncOpenAI(base_url=llm.for_agent("solver").base_url, api_key="unused")
    messages: list[Any] = [{"role": "user", "content": task["q"]}]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    if task.get("stream"):
        stream = await client.chat.completions.create(model=llm.model, messages=messages, stream=True)
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
        agl.emit_object({"text": text})
        return 1.0
    response = await client.chat.completions.create(model=llm.model, messages=messages, tools=tools)
    message = response.choices[0].message
    if message.tool_calls:  # the upstream asks for the tool: answer it and ask again
        agl.emit_object({"text": message.content or "", "tool": message.tool_calls[0].function.name})
        messages += [
            message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "sunny"},
        ]
        response = await client.chat.completions.create(model=llm.model, messages=messages, tools=tools)
    agl.emit_object({"text": response.choices[0].message.content or ""})
    return 1.0


@pytest.mark.parametrize("agent", [sync_agent, async_agent], ids=["sync", "async"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_agent_calls_are_recorded_with_token_ids_that_decode_to_what_it_received(
    gateway: agl.Gateway, store: agl.SqliteStore, agent: agl.LitAgent, stream: bool
) -> None:
    trainer = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("echo")})
    result = trainer.dev(
        agent, [{"q": "what is 2 + 2?", "stream": stream}, {"q": "and the weather?", "stream": stream}]
    )
    assert result.succeeded == 2
    for rollout, _ in result.rollouts:
        spans = asyncio.run(store.query_spans(rollout.rollout_id))
        calls = llm_spans(spans)
        texts = [r["text"] for r in received(spans)]
        assert len(calls) == len(texts) >= 1
        for call, text in zip(calls, texts, strict=True):
            ids = call.attributes[semconv.AGL_COMPLETION_TOKEN_IDS]
            assert isinstance(ids, list)
            if call.attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ["tool_calls"]:
                assert "get_weather" in detokenize(ids)  # type: ignore[arg-type]
            else:
                assert detokenize(ids) == text  # type: ignore[arg-type]
            assert call.attributes[semconv.AGL_PROMPT_TOKEN_IDS]
            logprobs = call.attributes[semconv.AGL_COMPLETION_LOGPROBS]
            assert isinstance(logprobs, list) and len(logprobs) == len(ids)
            assert call.kind == agl.SpanKind.CLIENT and call.attributes[semconv.GEN_AI_REQUEST_MODEL] == "echo"
        if agent is async_agent:
            assert all(c.attributes[semconv.GEN_AI_AGENT_NAME] == "solver" for c in calls)


def test_tool_calls_round_trip_and_are_recorded(gateway: agl.Gateway, store: agl.SqliteStore) -> None:
    trainer = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("echo")})
    result = trainer.dev(async_agent, [{"q": "what is the weather in Paris?"}])
    ((rollout, _),) = result.rollouts
    spans = asyncio.run(store.query_spans(rollout.rollout_id))
    first, second = llm_spans(spans)
    output = json.loads(str(first.attributes[semconv.GEN_AI_OUTPUT_MESSAGES]))
    assert output[0]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert first.attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ["tool_calls"]
    assert "get_weather" in str(first.attributes[semconv.GEN_AI_TOOL_DEFINITIONS])
    assert json.loads(str(second.attributes[semconv.GEN_AI_INPUT_MESSAGES]))[-1] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": "sunny",
    }
    trajectory = agl.TraceToTrajectory().adapt(spans)
    assert [t.agent_name for t in trajectory.transitions] == ["solver", "solver"] and trajectory.final_reward == 1.0


def test_32_concurrent_rollouts_are_each_attributed_to_their_own(gateway: agl.Gateway, store: agl.SqliteStore) -> None:
    @agl.rollout
    async def agent(task: dict[str, Any], llm: agl.LLM) -> float:
        client = openai.AsyncOpenAI(base_url=llm.base_url, api_key="unused")
        await asyncio.sleep(0.05)  # overlap the rollouts
        response = await client.chat.completions.create(
            model=llm.model, messages=[{"role": "user", "content": task["q"]}]
        )
        return 1.0 if response.choices[0].message.content == f"echo: {task['q']}" else 0.0

    trainer = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("echo")}, max_concurrency=32)
    result = trainer.dev(agent, [{"q": f"task number {i}"} for i in range(32)])
    assert result.mean_reward == 1.0
    for rollout, _ in result.rollouts:
        (call,) = llm_spans(asyncio.run(store.query_spans(rollout.rollout_id)))
        assert json.loads(str(call.attributes[semconv.GEN_AI_INPUT_MESSAGES]))[0]["content"] == rollout.input["q"]  # type: ignore[index]


def _attempt(store: agl.SqliteStore) -> agl.AttemptedRollout:
    return asyncio.run(store.start_rollout(agl.RolloutRequest(input="x")))


def _spans_after(gateway: agl.Gateway, store: agl.SqliteStore, rollout: agl.AttemptedRollout) -> list[agl.Span]:
    """The rollout's spans: the gateway stored each call before answering it."""
    return asyncio.run(store.query_spans(rollout.rollout_id))


def test_headers_attribute_calls_and_traceparent_joins_the_callers_trace(
    gateway: agl.Gateway, store: agl.SqliteStore
) -> None:
    rollout = _attempt(store)
    traceparent = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    response = httpx.post(
        gateway.url + "/chat/completions",
        json={"model": "echo", "messages": [{"role": "user", "content": "hi"}], "logprobs": True},
        headers={
            "x-agentlightning-rollout-id": rollout.rollout_id,
            "x-agentlightning-attempt-id": rollout.attempt.attempt_id,
            "x-agentlightning-agent": "planner",
            "traceparent": traceparent,
        },
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["logprobs"]["content"]  # asked for: passed through
    (call,) = llm_spans(_spans_after(gateway, store, rollout))
    assert (call.trace_id, call.parent_id) == ("ab" * 16, "cd" * 8)
    assert call.attributes[semconv.AGL_CALLER_TRACEPARENT] == traceparent
    assert call.attributes[semconv.GEN_AI_AGENT_NAME] == "planner"


def test_agent_models_route_each_agents_calls_to_its_own_model(upstream: str, store: agl.SqliteStore) -> None:
    rollout = _attempt(store)
    llm = agl.LLM(base_url="", model="base", gateway=True)
    with agl.Gateway(upstream, store, agent_models={"writer": "base@writer"}) as gateway:
        answered = {}
        for agent in ("writer", "checker", None):
            url = llm.model_copy(update={"base_url": gateway.url}).for_attempt(
                rollout.rollout_id, rollout.attempt.attempt_id, agent
            )
            response = httpx.post(
                url.base_url + "/chat/completions",
                json={"model": "base", "messages": [{"role": "user", "content": "hi"}]},
            )
            answered[agent] = response.json()["model"]  # the upstream names the model it was asked for
    assert answered == {"writer": "base@writer", "checker": "base", None: "base"}
    calls = llm_spans(_spans_after(gateway, store, rollout))
    for key in (semconv.GEN_AI_REQUEST_MODEL, semconv.GEN_AI_RESPONSE_MODEL):
        routed = {c.attributes.get(semconv.GEN_AI_AGENT_NAME): c.attributes[key] for c in calls}
        assert routed == {"writer": "base@writer", "checker": "base", None: "base"}, key


def test_logprobs_the_client_did_not_ask_for_are_not_sent_back(gateway: agl.Gateway, store: agl.SqliteStore) -> None:
    rollout = _attempt(store)
    url = (
        agl.LLM(base_url=gateway.url, model="echo", gateway=True)
        .for_attempt(rollout.rollout_id, rollout.attempt.attempt_id)
        .base_url
    )
    response = httpx.post(
        url + "/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert response.status_code == 200 and response.json()["choices"][0]["logprobs"] is None
    (call,) = llm_spans(_spans_after(gateway, store, rollout))
    assert len(call.attributes[semconv.AGL_COMPLETION_LOGPROBS]) == len("echo: hi")  # type: ignore[arg-type]


def test_bad_requests_get_openai_shaped_errors_and_are_recorded(
    upstream: str, gateway: agl.Gateway, store: agl.SqliteStore
) -> None:
    rollout = _attempt(store)
    url = gateway.llm("echo").for_attempt(rollout.rollout_id, rollout.attempt.attempt_id).base_url

    malformed = httpx.post(
        url + "/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "invalid_json"

    failing = httpx.post(url + "/chat/completions", json={"model": "fail", "messages": []})
    assert failing.status_code == 500 and failing.json()["error"]["message"] == "the model crashed"

    unknown = httpx.post(
        gateway.llm("echo").for_attempt("ro-nope", "at-nope").base_url + "/chat/completions",
        json={"model": "echo", "messages": []},
    )
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "rollout_not_found"

    # OpenAI clients parse the gateway's errors as their own.
    half = {"x-agentlightning-rollout-id": rollout.rollout_id}
    client = openai.OpenAI(base_url=gateway.url, api_key="unused", default_headers=half)
    with client, pytest.raises(openai.BadRequestError, match="Name both the rollout and the attempt"):
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])

    errors = [
        s for s in llm_spans(_spans_after(gateway, store, rollout)) if s.status.status_code == agl.StatusCode.ERROR
    ]
    assert {s.attributes[semconv.ERROR_TYPE] for s in errors} >= {"invalid_json", "500"}
    assert gateway.statistics.unknown_rollout == 1


def test_an_unreachable_upstream_is_a_502_recorded_in_the_rollout(store: agl.SqliteStore) -> None:
    with agl.Gateway("http://127.0.0.1:9/v1", store) as gateway:
        rollout = _attempt(store)
        url = gateway.llm("echo").for_attempt(rollout.rollout_id, rollout.attempt.attempt_id).base_url
        with (
            openai.OpenAI(base_url=url, api_key="unused", max_retries=0) as client,
            pytest.raises(openai.APIStatusError) as caught,
        ):
            client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
        assert caught.value.status_code == 502 and "could not reach its upstream" in str(caught.value)
        (call,) = llm_spans(_spans_after(gateway, store, rollout))
        assert (
            call.status.status_code == agl.StatusCode.ERROR
            and call.attributes[semconv.ERROR_TYPE] == "upstream_unreachable"
        )


def test_the_cores_caller_header_attributes_calls_unless_the_caller_sent_its_own_headers(
    gateway: agl.Gateway, store: agl.SqliteStore
) -> None:
    from agentlightning.tracer.propagation import caller_header

    rollout = _attempt(store)
    ours, theirs = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01", "00-" + "12" * 16 + "-" + "34" * 8 + "-01"
    for own in ({}, {"traceparent": theirs, "x-agentlightning-agent": "planner"}):
        response = httpx.post(
            gateway.url + "/chat/completions",
            json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
            headers={
                "x-agentlightning-rollout-id": rollout.rollout_id,
                "x-agentlightning-attempt-id": rollout.attempt.attempt_id,
                "x-agentlightning-caller": caller_header(ours, "Büro; v=2"),
                **own,
            },
        )
        assert response.status_code == 200
    first, second = sorted(llm_spans(_spans_after(gateway, store, rollout)), key=lambda s: s.start_time)
    assert (first.parent_id, first.attributes[semconv.GEN_AI_AGENT_NAME]) == ("cd" * 8, "Büro; v=2")
    assert first.attributes[semconv.AGL_CALLER_TRACEPARENT] == ours
    assert (second.parent_id, second.attributes[semconv.GEN_AI_AGENT_NAME]) == ("34" * 8, "planner")


def test_propagated_traceparent_nests_gateway_calls_under_the_callers_span(
    gateway: agl.Gateway, store: agl.SqliteStore
) -> None:
    """With ``propagate_traceparent``, an openai call made inside an operation carries that span as its parent."""
    from agentlightning.tracer import propagate_traceparent

    assert propagate_traceparent()  # openai is imported here

    @agl.rollout
    def agent(task: str, llm: agl.LLM) -> float:
        client = openai.OpenAI(base_url=llm.base_url, api_key="unused")
        with agl.operation(name="plan"):
            client.chat.completions.create(model=llm.model, messages=[{"role": "user", "content": task}])
        return 1.0

    outside = openai.OpenAI(base_url=gateway.url, api_key="unused").chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "no rollout"}]
    )
    assert outside.http_request.headers.get("traceparent") is None  # outside a rollout, requests are left alone

    result = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("m")}).dev(agent, ["hi"])
    spans = asyncio.run(store.query_spans(result.rollouts[0][0].rollout_id))
    (call,) = llm_spans(spans)
    (plan,) = [s for s in spans if s.attributes.get(semconv.AGL_OPERATION_NAME) == "plan"]
    assert (call.trace_id, call.parent_id) == (plan.trace_id, plan.span_id)
    assert str(call.attributes[semconv.AGL_CALLER_TRACEPARENT]).startswith(f"00-{plan.trace_id}-{plan.span_id}-")


async def test_requests_carry_the_current_run_and_agent_unless_the_caller_set_its_own_traceparent() -> None:
    from agentlightning.tracer import Tracer, begin_span, propagate_traceparent

    assert propagate_traceparent()
    sent: list[httpx.Headers] = []

    def capture(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers)
        message = {"role": "assistant", "content": "ok"}
        body = {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        }
        return httpx.Response(200, json=body)

    client = openai.OpenAI(
        base_url="http://model/v1", api_key="unused", http_client=httpx.Client(transport=httpx.MockTransport(capture))
    )
    store = agl.InMemoryStore()
    tracer = Tracer(store)
    rollout = await store.start_rollout(agl.RolloutRequest(input="task"))
    ask: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    try:
        client.chat.completions.create(**ask)  # outside a rollout: left alone
        with tracer.trace_sync(rollout.rollout_id, rollout.attempt.attempt_id):
            span = begin_span("invoke_agent writer", attributes={semconv.GEN_AI_AGENT_NAME: "writer"})
            assert span is not None
            with span.current():
                client.chat.completions.create(**ask)
                client.chat.completions.create(
                    **ask, extra_headers={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
                )
            span.end()
    finally:
        tracer.close()
        await store.close()
    outside, inside, own = sent
    assert not any(key.startswith(("traceparent", "x-agentlightning")) for key in outside)
    # One header for both (each header costs the HTTP client passes over all of them).
    assert inside.get_list("x-agentlightning-caller") == [f"traceparent={span.traceparent};agent=writer"]
    assert "traceparent" not in inside and "x-agentlightning-agent" not in inside
    assert own.get_list("traceparent") == ["00-" + "1" * 32 + "-" + "2" * 16 + "-01"]  # and the gateway takes it


@pytest.mark.parametrize("name", ["writer", "rédacteur 数学; v=2"])  # headers are ASCII: any name must get through
def test_a_call_made_inside_an_agents_span_names_the_agent_and_is_routed_to_its_model(
    upstream: str, store: agl.SqliteStore, name: str
) -> None:
    """An integration's span naming an agent, made current, tells the gateway whose call it answers."""
    from agentlightning.tracer import begin_span, propagate_traceparent

    assert propagate_traceparent()

    @agl.rollout
    def agent(task: str, llm: agl.LLM) -> float:
        client = openai.OpenAI(base_url=llm.base_url, api_key="unused")
        span = begin_span(f"invoke_agent {name}", attributes={semconv.GEN_AI_AGENT_NAME: name})
        assert span is not None
        with span.current():
            client.chat.completions.create(model=llm.model, messages=[{"role": "user", "content": task}])
        span.end()
        client.chat.completions.create(model=llm.model, messages=[{"role": "user", "content": task}])
        return 1.0

    with agl.Gateway(upstream, store, agent_models={name: "m@writer"}) as gateway:
        result = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("m")}).dev(agent, ["hi"])
    assert result.rollouts[0][0].status == agl.RolloutStatus.SUCCEEDED
    calls = sorted(
        llm_spans(asyncio.run(store.query_spans(result.rollouts[0][0].rollout_id))), key=lambda s: s.start_time
    )
    assert [c.attributes.get(semconv.GEN_AI_AGENT_NAME) for c in calls] == [name, None]
    assert [c.attributes[semconv.GEN_AI_RESPONSE_MODEL] for c in calls] == ["m@writer", "m"]
