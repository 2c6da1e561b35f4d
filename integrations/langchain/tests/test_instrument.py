"""instrument() / uninstrument(): every LangChain run in the process is recorded without passing a handler, through
the core's integrations registry too, once (not twice next to an explicit handler), and can be switched off."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import agentlightning_langchain
import pytest
from agentlightning_langchain import LightningCallbackHandler, instrumented_handler
from conftest import assert_joined, by_name, chat_model, handler_calls, rollout_spans
from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, MessagesState, StateGraph

import agentlightning as agl


@pytest.fixture(autouse=True)
def not_instrumented() -> Iterator[None]:
    agentlightning_langchain.uninstrument()
    yield
    agentlightning_langchain.uninstrument()


def graph_agent(explicit: LightningCallbackHandler | None = None) -> agl.LitAgent:
    @agl.rollout
    async def agent(task: dict[str, Any], llm: agl.LLM) -> float:
        model = chat_model(llm, max_tokens=2)

        async def answer(state: MessagesState) -> dict[str, Any]:
            return {"messages": [await model.ainvoke(state["messages"])]}

        graph = StateGraph(MessagesState).add_node("answer", answer)
        app = graph.add_edge(START, "answer").add_edge("answer", END).compile()
        config: Any = {"callbacks": [explicit]} if explicit is not None else {}
        await app.ainvoke({"messages": [HumanMessage("hi")]}, config)
        return 1.0

    return agent


def run(store: agl.SqliteStore, gateway: agl.Gateway, agent: agl.LitAgent) -> list[agl.Span]:
    result = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("tiny")}).dev(agent, [{"q": 1}])
    assert result.succeeded == 1
    return rollout_spans(store, result.rollouts[0][0])


def test_the_integration_is_installed_and_instruments_through_the_core(
    tiny_gateway: agl.Gateway, store: agl.SqliteStore
) -> None:
    (integration,) = [i for i in agl.installed_integrations() if i.name == "langchain"]
    assert integration.distribution == "agentlightning-langchain" and integration.target == "agentlightning_langchain"
    assert agl.instrument("langchain") == ["langchain"]
    handler = instrumented_handler()
    assert isinstance(handler, LightningCallbackHandler)
    spans = run(store, tiny_gateway, graph_agent())
    assert by_name(spans, "LangGraph") and by_name(spans, "answer")
    assert_joined(spans, ["answer"])
    assert handler.errors == 0

    assert agl.uninstrument("langchain") == ["langchain"]
    assert instrumented_handler() is None
    spans = run(store, tiny_gateway, graph_agent())
    assert not handler_calls(spans) and not by_name(spans, "LangGraph")  # only the gateway's span is left
    assert len(agl.TraceToTrajectory().adapt(spans).transitions) == 1


def test_instrument_is_idempotent_and_an_explicit_handler_does_not_record_twice(
    tiny_gateway: agl.Gateway, store: agl.SqliteStore
) -> None:
    handler = agentlightning_langchain.instrument()
    assert agentlightning_langchain.instrument() is handler
    explicit = LightningCallbackHandler()
    spans = run(store, tiny_gateway, graph_agent(explicit))
    assert len(by_name(spans, "LangGraph")) == 1 and len(handler_calls(spans)) == 1
    assert_joined(spans, ["answer"])
    assert handler.errors == explicit.errors == 0


def test_instrumented_runs_outside_a_rollout_record_nothing(tiny_gateway: agl.Gateway, store: agl.SqliteStore) -> None:
    handler = agentlightning_langchain.instrument()
    rollout = asyncio.run(store.start_rollout(agl.RolloutRequest(input="outside")))
    llm = tiny_gateway.llm("tiny").for_attempt(rollout.rollout_id, rollout.attempt.attempt_id)
    message = chat_model(llm, max_tokens=2).invoke([HumanMessage("hi")])  # no active rollout in this thread
    assert isinstance(message.content, str) and handler.errors == 0
    spans = asyncio.run(store.query_spans(rollout.rollout_id))
    assert [s.attributes.get(agl.semconv.AGL_LLM_GATEWAY) for s in spans] == [True]  # the gateway's only
