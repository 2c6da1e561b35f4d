"""Agent -> gateway -> engine: plain OpenAI-client agents run by ``Trainer.dev`` through a real ``agl.Gateway``
in front of a real ``TransformersEngine``, and the store holds every call with token ids that decode to exactly
what the agent received.

The engine serves a tiny random Llama (fixed seed) with SmolLM2's tokenizer; a scripted stand-in model makes the
engine say a tool call. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agentlightning_engine import ChatCompletionRequest, EngineServer, TransformersEngine
from agentlightning_engine.testing import save_tiny_model, serve_scripted

import agentlightning as agl
from agentlightning import semconv
from agentlightning.testing import store as store  # the fixture

MAX_TOKENS = 8
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
CITIES = ["Paris", "Oslo", "Lima", "Nairobi"]


def tool_call(city: str) -> str:
    """What the scripted model says when asked about the weather in ``city``: a Hermes-style tool call."""
    return f'Let me check.<tool_call>\n{{"name": "get_weather", "arguments": {{"city": "{city}"}}}}\n</tool_call>'


def answer(city: str) -> str:
    """What the scripted model says once the tool answered."""
    return f"It is sunny in {city}."


def weather_model(prompt: str) -> str:
    """The scripted model: calls the weather tool for the city the user asks about, then answers from its result."""
    told = re.search(r"sunny in (\w+)", prompt)
    return answer(told.group(1)) if told else tool_call(re.findall(r"weather in (\w+)", prompt)[-1])


# --- the engines and the gateway ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TransformersEngine]:
    with TransformersEngine(save_tiny_model(tmp_path_factory.mktemp("tiny")), served_model_name="tiny") as engine:
        yield engine


@pytest.fixture(scope="module")
def engine_server(engine: TransformersEngine) -> Iterator[EngineServer]:
    with engine.serve(port=0) as server:
        yield server


@pytest.fixture(scope="module")
def scripted_server(engine: TransformersEngine) -> Iterator[EngineServer]:
    """An engine whose model calls the weather tool, then answers from the tool's result."""
    with serve_scripted(weather_model, tokenizer=engine.tokenizer) as server:
        yield server


@pytest.fixture
def gateway(engine_server: EngineServer, store: agl.SqliteStore) -> Iterator[agl.Gateway]:
    with agl.Gateway(engine_server.url, store) as gateway:
        yield gateway


# --- what the store holds ------------------------------------------------------------------------------------


def llm_calls(spans: list[agl.Span]) -> list[agl.Span]:
    """The gateway's LLM-call spans, in the order they were made."""
    calls = [s for s in spans if s.attributes.get(semconv.GEN_AI_OPERATION_NAME) == semconv.GEN_AI_OPERATION_CHAT]
    return sorted(calls, key=lambda s: s.start_time)


def received(spans: list[agl.Span]) -> dict[str, Any]:
    """What the agent recorded with ``agl.emit_object``: the texts it received from its calls."""
    (recorded,) = [
        json.loads(str(s.attributes[semconv.AGL_OBJECT_JSON])) for s in spans if s.name == semconv.SPAN_OBJECT
    ]
    return recorded  # type: ignore[no-any-return]


def spans_and_attempt(store: agl.SqliteStore, rollout: agl.Rollout) -> tuple[list[agl.Span], str]:
    (attempt,) = asyncio.run(store.query_attempts(rollout.rollout_id))
    return asyncio.run(store.query_spans(rollout.rollout_id)), attempt.attempt_id


def assert_tokens_match(engine: TransformersEngine, call: agl.Span, text: str) -> None:
    """The call's completion token ids decode to exactly ``text``; its prompt token ids are its recorded messages
    (and tools) through the model's chat template; there is one logprob per completion token."""
    ids = call.attributes[semconv.AGL_COMPLETION_TOKEN_IDS]
    assert isinstance(ids, list) and ids, "the engine's completion token ids were not recorded"
    assert engine.tokenizer.decode(ids, skip_special_tokens=True) == text
    logprobs = call.attributes[semconv.AGL_COMPLETION_LOGPROBS]
    assert isinstance(logprobs, list) and len(logprobs) == len(ids)
    messages = json.loads(str(call.attributes[semconv.GEN_AI_INPUT_MESSAGES]))
    tools = call.attributes.get(semconv.GEN_AI_TOOL_DEFINITIONS)
    request = ChatCompletionRequest(messages=messages, tools=None if tools is None else json.loads(str(tools)))
    assert call.attributes[semconv.AGL_PROMPT_TOKEN_IDS] == engine.render_prompt(request)


# --- agents: plain OpenAI-client code ------------------------------------------------------------------------


def follow_up(question: str, reply: str) -> list[Any]:
    """A conversation that already went through a tool call: the second request of each agent below."""
    return [
        {"role": "user", "content": question},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "And the weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]


def ask(client: openai.OpenAI, model: str, messages: list[Any], stream: bool, **params: Any) -> str:
    """One chat completion; the text the agent gets (streamed: the deltas joined)."""
    if stream:
        chunks = client.chat.completions.create(
            model=model, messages=messages, max_tokens=MAX_TOKENS, temperature=0, stream=True, **params
        )
        return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    response = client.chat.completions.create(
        model=model, messages=messages, max_tokens=MAX_TOKENS, temperature=0, **params
    )
    return response.choices[0].message.content or ""


async def ask_async(client: openai.AsyncOpenAI, model: str, messages: list[Any], stream: bool, **params: Any) -> str:
    if stream:
        chunks = await client.chat.completions.create(
            model=model, messages=messages, max_tokens=MAX_TOKENS, temperature=0, stream=True, **params
        )
        return "".join([chunk.choices[0].delta.content or "" async for chunk in chunks if chunk.choices])
    response = await client.chat.completions.create(
        model=model, messages=messages, max_tokens=MAX_TOKENS, temperature=0, **params
    )
    return response.choices[0].message.content or ""


@agl.rollout
def sync_agent(task: dict[str, Any], llm: agl.LLM) -> float:
    with openai.OpenAI(base_url=llm.base_url, api_key="unused", max_retries=0) as client:
        first = ask(client, llm.model, [{"role": "user", "content": task["q"]}], task["stream"])
        second = ask(client, llm.model, follow_up(task["q"], first), task["stream"], tools=TOOLS)
    agl.emit_object({"texts": [first, second]})
    return 1.0


@agl.rollout
async def async_agent(task: dict[str, Any], llm: agl.LLM) -> float:
    client = openai.AsyncOpenAI(base_url=llm.for_agent("solver").base_url, api_key="unused", max_retries=0)
    async with client:
        first = await ask_async(client, llm.model, [{"role": "user", "content": task["q"]}], task["stream"])
        second = await ask_async(client, llm.model, follow_up(task["q"], first), task["stream"], tools=TOOLS)
    agl.emit_object({"texts": [first, second]})
    return 1.0


@pytest.mark.parametrize("agent", [sync_agent, async_agent], ids=["sync", "async"])
def test_each_call_is_one_span_whose_token_ids_decode_to_what_the_agent_received(
    engine: TransformersEngine, gateway: agl.Gateway, store: agl.SqliteStore, agent: agl.LitAgent
) -> None:
    tasks = [{"q": "What is 2 + 2?", "stream": False}, {"q": "Name a colour.", "stream": True}]
    result = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("tiny")}).dev(agent, tasks)
    assert result.succeeded == 2
    for rollout, _ in result.rollouts:
        spans, attempt_id = spans_and_attempt(store, rollout)
        calls, texts = llm_calls(spans), received(spans)["texts"]
        assert len(calls) == len(texts) == 2  # one span per call, no more
        for call, text in zip(calls, texts, strict=True):
            assert_tokens_match(engine, call, text)
            assert (call.rollout_id, call.attempt_id) == (rollout.rollout_id, attempt_id)
            assert call.kind == agl.SpanKind.CLIENT and call.status.status_code != agl.StatusCode.ERROR
            assert call.attributes[semconv.GEN_AI_REQUEST_MODEL] == "tiny"
            assert call.attributes[semconv.GEN_AI_RESPONSE_MODEL] == "tiny"
            assert call.attributes.get(semconv.GEN_AI_AGENT_NAME) == ("solver" if agent is async_agent else None)
        first, second = calls
        assert json.loads(str(first.attributes[semconv.GEN_AI_INPUT_MESSAGES])) == [
            {"role": "user", "content": rollout.input["q"]}
        ]
        assert semconv.GEN_AI_TOOL_DEFINITIONS not in first.attributes
        history = json.loads(str(second.attributes[semconv.GEN_AI_INPUT_MESSAGES]))
        assert history == follow_up(rollout.input["q"], texts[0])
        assert json.loads(str(second.attributes[semconv.GEN_AI_TOOL_DEFINITIONS])) == TOOLS


# --- a tool call the engine parsed ---------------------------------------------------------------------------


async def complete(
    client: openai.AsyncOpenAI, model: str, messages: list[Any], stream: bool
) -> tuple[str, list[dict[str, Any]]]:
    """One call offering the tools: the content and tool calls the agent gets (streamed: reassembled)."""
    if not stream:
        response = await client.chat.completions.create(model=model, messages=messages, tools=TOOLS, temperature=0)
        message = response.choices[0].message
        return message.content or "", [
            call.model_dump(include={"id", "type", "function"}) for call in message.tool_calls or []
        ]
    content: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    chunks = await client.chat.completions.create(
        model=model, messages=messages, tools=TOOLS, temperature=0, stream=True
    )
    async for chunk in chunks:
        for choice in chunk.choices:
            content.append(choice.delta.content or "")
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(
                    delta.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
                )
                call["id"] += delta.id or ""
                if delta.function is not None:
                    call["function"]["name"] += delta.function.name or ""
                    call["function"]["arguments"] += delta.function.arguments or ""
    return "".join(content), [calls[i] for i in sorted(calls)]


@agl.rollout
async def weather_agent(task: dict[str, Any], llm: agl.LLM) -> float:
    client = openai.AsyncOpenAI(base_url=llm.for_agent("weather").base_url, api_key="unused", max_retries=0)
    messages: list[Any] = [{"role": "user", "content": f"What is the weather in {task['city']}?"}]
    async with client:
        said, calls = await complete(client, llm.model, messages, task["stream"])
        (call,) = calls
        city = json.loads(call["function"]["arguments"])["city"]
        messages += [
            {"role": "assistant", "content": said, "tool_calls": calls},
            {"role": "tool", "tool_call_id": call["id"], "content": f"sunny in {city}"},
        ]
        final, _ = await complete(client, llm.model, messages, task["stream"])
    agl.emit_object({"texts": [said, final], "tool_calls": calls})
    return 1.0 if final == answer(task["city"]) else 0.0


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_tool_calls_the_engine_parsed_reach_the_agents_and_are_recorded(
    engine: TransformersEngine, scripted_server: EngineServer, store: agl.SqliteStore, stream: bool
) -> None:
    with agl.Gateway(scripted_server.url, store) as gateway:
        trainer = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("scripted")})
        result = trainer.dev(weather_agent, [{"city": city, "stream": stream} for city in CITIES])
    assert result.mean_reward == 1.0 and len(result.rollouts) == len(CITIES)
    for rollout, _ in result.rollouts:
        city = rollout.input["city"]
        spans, attempt_id = spans_and_attempt(store, rollout)
        first, second = llm_calls(spans)
        got = received(spans)
        (call,) = got["tool_calls"]
        assert call["function"] == {"name": "get_weather", "arguments": json.dumps({"city": city})}
        assert got["texts"] == ["Let me check.", answer(city)]

        # The tool call: parsed out of the content, but its tokens stay in the completion token ids.
        assert first.attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ["tool_calls"]
        (output,) = json.loads(str(first.attributes[semconv.GEN_AI_OUTPUT_MESSAGES]))
        assert output["content"] == "Let me check."
        assert [(c["id"], c["function"]) for c in output["tool_calls"]] == [(call["id"], call["function"])]
        assert json.loads(str(first.attributes[semconv.GEN_AI_TOOL_DEFINITIONS])) == TOOLS
        assert_tokens_match(engine, first, tool_call(city))

        # The answer, asked with the tool's result.
        assert json.loads(str(second.attributes[semconv.GEN_AI_INPUT_MESSAGES]))[-1] == {
            "role": "tool",
            "tool_call_id": call["id"],
            "content": f"sunny in {city}",
        }
        assert second.attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ["stop"]
        assert_tokens_match(engine, second, answer(city))

        assert {(s.rollout_id, s.attempt_id) for s in (first, second)} == {(rollout.rollout_id, attempt_id)}
        trajectory = agl.TraceToTrajectory().adapt(spans)
        assert [t.agent_name for t in trajectory.transitions] == ["weather", "weather"]
        assert [t.completion_token_ids for t in trajectory.transitions] == [
            first.attributes[semconv.AGL_COMPLETION_TOKEN_IDS],
            second.attributes[semconv.AGL_COMPLETION_TOKEN_IDS],
        ]
        assert trajectory.final_reward == 1.0


# --- many rollouts at once -----------------------------------------------------------------------------------


def test_32_simultaneous_rollouts_through_one_gateway_are_each_attributed_to_their_own(
    engine: TransformersEngine, gateway: agl.Gateway, store: agl.SqliteStore
) -> None:
    together = asyncio.Barrier(32)

    @agl.rollout
    async def agent(task: dict[str, Any], llm: agl.LLM) -> float:
        async with openai.AsyncOpenAI(base_url=llm.base_url, api_key="unused", max_retries=0) as client:
            async with asyncio.timeout(60):
                await together.wait()  # all 32 rollouts are running before any of them calls the LLM
            text = await ask_async(client, llm.model, [{"role": "user", "content": task["q"]}], stream=False)
        agl.emit_object({"texts": [text]})
        return 1.0

    trainer = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("tiny")}, max_concurrency=32)
    result = trainer.dev(agent, [{"q": f"Task number {i}: describe the number {i}."} for i in range(32)])
    assert result.succeeded == 32
    for rollout, _ in result.rollouts:
        spans, attempt_id = spans_and_attempt(store, rollout)
        (call,) = llm_calls(spans)
        assert (call.rollout_id, call.attempt_id) == (rollout.rollout_id, attempt_id)
        assert json.loads(str(call.attributes[semconv.GEN_AI_INPUT_MESSAGES])) == [
            {"role": "user", "content": rollout.input["q"]}
        ]
        assert_tokens_match(engine, call, received(spans)["texts"][0])


# --- bad requests --------------------------------------------------------------------------------------------


def assert_openai_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert {"message", "type", "param", "code"} <= set(error) and error["message"] and error["code"] == code
    return error  # type: ignore[no-any-return]


def test_bad_requests_get_openai_shaped_errors_and_are_recorded(
    engine: TransformersEngine, gateway: agl.Gateway, store: agl.SqliteStore
) -> None:
    rollout = asyncio.run(store.start_rollout(agl.RolloutRequest(input="bad requests")))
    url = gateway.llm("tiny").for_attempt(rollout.rollout_id, rollout.attempt.attempt_id).base_url

    malformed = httpx.post(
        url + "/chat/completions",
        content=b'{"model": "tiny", "messages": [',
        headers={"content-type": "application/json"},
    )
    assert assert_openai_error(malformed, 400, "invalid_json")["type"] == "invalid_request_error"

    # A well-formed body the engine refuses: the agent gets the engine's own error, as an OpenAI client error.
    image: list[Any] = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]
    with (
        openai.OpenAI(base_url=url, api_key="unused", max_retries=0) as client,
        pytest.raises(openai.BadRequestError, match="only text parts") as refused,
    ):
        client.chat.completions.create(model="tiny", messages=image)
    assert refused.value.type == "invalid_request_error" and refused.value.param == "messages.0.content"
    with (
        openai.OpenAI(base_url=url, api_key="unused", max_retries=0) as client,
        pytest.raises(openai.BadRequestError, match="only text parts"),
    ):
        client.chat.completions.create(model="tiny", messages=image, stream=True)

    # A rollout the store does not have: refused before it reaches the engine.
    sequences = engine.statistics.sequences
    unknown = gateway.llm("tiny").for_attempt("ro-unknown", "at-unknown").base_url
    with (
        openai.OpenAI(base_url=unknown, api_key="unused", max_retries=0) as client,
        pytest.raises(openai.NotFoundError, match="no rollout 'ro-unknown'") as missing,
    ):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.code == "rollout_not_found" and missing.value.type == "invalid_request_error"
    assert engine.statistics.sequences == sequences
    assert gateway.statistics.unknown_rollout == 1

    errors = llm_calls(asyncio.run(store.query_spans(rollout.rollout_id)))
    assert [s.status.status_code for s in errors] == [agl.StatusCode.ERROR] * 3
    assert [s.attributes[semconv.ERROR_TYPE] for s in errors] == ["invalid_json", "400", "400"]
    assert all(s.attributes["http.response.status_code"] == 400 for s in errors)
    assert "not valid JSON" in str(errors[0].status.description)
    assert all("only text parts" in str(s.status.description) for s in errors[1:])
    assert all(s.attempt_id == rollout.attempt.attempt_id for s in errors)


@agl.rollout
def calls_a_stopped_engine(task: dict[str, Any], llm: agl.LLM) -> float:
    with openai.OpenAI(base_url=llm.base_url, api_key="unused", max_retries=0) as client:
        ask(client, llm.model, [{"role": "user", "content": "hi"}], task["stream"])
    return 1.0


def test_a_stopped_engine_is_a_502_that_fails_the_rollout_and_is_recorded(
    engine: TransformersEngine, store: agl.SqliteStore
) -> None:
    stopped = engine.serve(port=0).start()
    stopped.stop()
    with agl.Gateway(stopped.url, store) as gateway:
        trainer = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("tiny")})
        result = trainer.dev(calls_a_stopped_engine, [{"stream": False}, {"stream": True}])
        assert gateway.statistics.upstream_errors == 2
    assert result.succeeded == 0
    for rollout, _ in result.rollouts:
        assert rollout.status == agl.RolloutStatus.FAILED
        spans, attempt_id = spans_and_attempt(store, rollout)
        (call,) = llm_calls(spans)
        assert call.status.status_code == agl.StatusCode.ERROR and call.attempt_id == attempt_id
        assert call.attributes[semconv.ERROR_TYPE] == "upstream_unreachable"
        assert call.attributes["http.response.status_code"] == 502
        assert "could not reach its upstream" in str(call.status.description)
        # The agent got an OpenAI server error (502), which failed its rollout with that reason.
        (failure,) = [s for s in spans if s.name == semconv.SPAN_EXCEPTION]
        assert failure.attributes[semconv.EXCEPTION_TYPE] == "InternalServerError"
        assert "could not reach its upstream" in str(failure.attributes[semconv.EXCEPTION_MESSAGE])
