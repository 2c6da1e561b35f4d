"""instrument() / uninstrument() replace AutoGen's methods and put them back; the explicit model client; the
model client for an agl.LLM, which never reaches the network beyond its URL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import autogen_core.tools._base as tools_module
import pytest
import tiktoken
from agentlightning_autogen import (
    LOCAL_MODEL_INFO,
    LightningChatCompletionClient,
    LightningRecorder,
    agent_name_here,
    chat_completion_client,
    instrument,
    instrumented_recorder,
    uninstrument,
)
from agentlightning_autogen.model import _SENDS_EXTRA_BODY
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import TextMentionTermination
from autogen_agentchat.teams import BaseGroupChat, RoundRobinGroupChat
from autogen_core.model_context import TokenLimitedChatCompletionContext
from autogen_core.models import LLMMessage, SystemMessage, UserMessage
from autogen_core.tools import BaseStreamTool, BaseTool, FunctionTool
from autogen_ext.models.openai import BaseOpenAIChatCompletionClient
from conftest import assert_joined, model_calls, named, rollout_spans

import agentlightning as agl
from agentlightning import semconv

HOOKED = [
    (BaseOpenAIChatCompletionClient, "create"),
    (BaseOpenAIChatCompletionClient, "create_stream"),
    (BaseTool, "run_json"),
    (BaseStreamTool, "run_json_stream"),
    (BaseGroupChat, "run_stream"),
    (tools_module, "trace_tool_span"),  # AutoGen's own tool-call span, where BaseTool opens it
]


def hooks() -> list[Any]:
    return [owner.__dict__[name] for owner, name in HOOKED]


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@pytest.fixture
def uninstrumented() -> Iterator[None]:
    uninstrument()
    yield
    uninstrument()


@pytest.mark.usefixtures("uninstrumented")
def test_instrument_hooks_autogen_once_and_uninstrument_puts_back_what_was_there() -> None:
    before = hooks()
    recorder = instrument()
    assert isinstance(recorder, LightningRecorder) and instrumented_recorder() is recorder
    hooked = hooks()
    assert all(a is not b for a, b in zip(before, hooked, strict=True))
    assert instrument() is recorder  # once
    assert hooks() == hooked

    uninstrument()
    assert hooks() == before
    assert instrumented_recorder() is None
    uninstrument()  # not instrumented: nothing to undo


@pytest.mark.usefixtures("uninstrumented")
def test_the_core_finds_the_integration_by_its_entry_point() -> None:
    assert "autogen" in [integration.name for integration in agl.installed_integrations()]
    assert agl.instrument("autogen") == ["autogen"]
    assert instrumented_recorder() is not None
    assert agl.uninstrument("autogen") == ["autogen"]
    assert instrumented_recorder() is None


def team(client_for: Any, llm: agl.LLM) -> RoundRobinGroupChat:
    writer = AssistantAgent("writer", model_client=client_for(llm), system_message="You are writer.")
    checker = AssistantAgent("checker", model_client=client_for(llm), system_message="You are checker.")
    return RoundRobinGroupChat([writer, checker], termination_condition=TextMentionTermination("APPROVE"))


@pytest.mark.usefixtures("uninstrumented")
def test_after_uninstrument_only_autogens_own_spans_and_the_gateways_are_recorded(
    gateway: agl.Gateway, store: agl.SqliteStore
) -> None:
    instrument()
    uninstrument()

    @agl.rollout
    async def work(task: str, llm: agl.LLM) -> float:
        agent = AssistantAgent("solver", model_client=chat_completion_client(llm), tools=[add])
        await agent.run(task=task)
        await team(chat_completion_client, llm).run(task=task)
        return 1.0

    result = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("scripted")}).dev(work, ["2 plus 3"])
    assert result.succeeded == 1
    spans = rollout_spans(store, result.rollouts[0][0])
    assert not model_calls(spans) and not named(spans, "team ")
    (tool,) = named(spans, "execute_tool add")  # AutoGen's own: no arguments
    assert semconv.GEN_AI_TOOL_CALL_ARGUMENTS not in tool.attributes
    assert len([s for s in spans if s.attributes.get(semconv.AGL_LLM_GATEWAY)]) == 3


@pytest.mark.usefixtures("uninstrumented")
def test_the_explicit_client_records_its_calls_named_after_their_agents(
    gateway: agl.Gateway, store: agl.SqliteStore
) -> None:
    recorder = LightningRecorder()

    def recorded(llm: agl.LLM) -> LightningChatCompletionClient:
        return LightningChatCompletionClient(chat_completion_client(llm), recorder=recorder)

    @agl.rollout
    async def work(task: str, llm: agl.LLM) -> float:
        result = await team(recorded, llm).run(task=task)
        return 1.0 if result.messages[-1].to_text() == "APPROVE" else 0.0

    trainer = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("scripted")})
    result = trainer.dev(work, ["what is 2 plus 3"])
    assert result.succeeded == 1 and result.mean_reward == 1.0 and recorder.errors == 0
    assert_joined(rollout_spans(store, result.rollouts[0][0]), ["writer", "checker"])

    # Wrapped and instrumented: each call is recorded once.
    instrument()
    result = trainer.dev(work, ["what is 2 plus 3"])
    assert_joined(rollout_spans(store, result.rollouts[0][0]), ["writer", "checker"])


def test_outside_a_rollout_nothing_is_recorded_and_agents_run_as_usual(
    recorder: LightningRecorder, gateway: agl.Gateway, store: agl.SqliteStore
) -> None:
    async def work() -> str:
        agent = AssistantAgent(
            "solver", model_client=chat_completion_client(gateway.llm("scripted")), tools=[add], system_message="x"
        )
        result = await agent.run(task="what is 2 plus 3")
        return result.messages[-1].to_text()

    assert asyncio.run(work()) == "5"  # the tool call's result, summarised
    assert recorder.errors == 0 and agent_name_here() is None


def test_the_model_client_for_an_llm_takes_its_url_model_key_and_sampling_parameters(
    caplog: pytest.LogCaptureFixture,
) -> None:
    llm = agl.LLM(
        base_url="http://127.0.0.1:1/rollouts/r/attempts/a/v1",
        model="smollm2-135m",
        api_key="k",
        sampling_parameters={"temperature": 0.5, "max_tokens": 7, "top_k": 20},
    )
    with caplog.at_level(logging.WARNING, "agentlightning.autogen"):
        client = chat_completion_client(llm, max_tokens=9, parallel_tool_calls=False)
    config: dict[str, Any] = client._raw_config
    assert (config["base_url"], config["model"], config["api_key"]) == (llm.base_url, "smollm2-135m", "k")
    assert (config["temperature"], config["max_tokens"], config["parallel_tool_calls"]) == (0.5, 9, False)
    assert client.model_info == LOCAL_MODEL_INFO and client.model_info["function_calling"]
    if _SENDS_EXTRA_BODY:  # autogen-ext 0.7.5 and later
        assert config["extra_body"] == {"top_k": 20}
    else:
        assert "top_k are not sent" in caplog.text
    # Saved as, and loaded back as, AutoGen's own client.
    assert client.dump_component().provider == "autogen_ext.models.openai.OpenAIChatCompletionClient"
    assert str(client._client.base_url) == llm.base_url + "/"


def test_counting_tokens_never_downloads_an_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("tiktoken was asked for an encoding")

    monkeypatch.setattr(tiktoken, "get_encoding", no_download)
    monkeypatch.setattr(tiktoken, "encoding_for_model", no_download)
    client = chat_completion_client(agl.LLM(base_url="http://127.0.0.1:1/v1", model="gpt-4o"))
    messages: list[LLMMessage] = [
        SystemMessage(content="You are solver."),
        UserMessage(content="what is 2 plus 3", source="user"),
    ]
    count = client.count_tokens(messages)
    assert 10 < count < 60
    assert client.count_tokens(messages, tools=[FunctionTool(add, description="Add two numbers.")]) > count

    # An agent whose context keeps to a token budget counts its messages on every call.
    async def trimmed() -> list[Any]:
        context = TokenLimitedChatCompletionContext(client, token_limit=30)
        for message in messages * 3:
            await context.add_message(message)
        return await context.get_messages()

    assert 0 < len(asyncio.run(trimmed())) < 6
