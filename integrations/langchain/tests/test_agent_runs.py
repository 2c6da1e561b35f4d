"""A LangChain agent (create_agent, with parallel tool calls) run by Trainer.dev through the gateway and the real
engine, invoked every way LangChain and LangGraph offer: the span tree, the agent name, the join with the
gateway's token ids, and the rewards emitted in a tool and returned at the end."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from agentlightning_langchain import LightningCallbackHandler
from conftest import AGENT_NAMES, assert_joined, by_name, chat_model, handler_calls, parent, rollout_spans
from langchain.agents import create_agent
from langchain_core.tools import tool

import agentlightning as agl
from agentlightning import semconv

AGENT = "forecaster" if AGENT_NAMES else "model"

MODES = ["invoke", "ainvoke", "stream", "astream", "messages", "amessages"]


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    agl.emit_reward(0.25)  # an intermediate reward, emitted inside the tool
    return f"sunny in {city}"


async def run_agent(agent: Any, inputs: dict[str, Any], config: dict[str, Any], mode: str) -> str:
    """Run a LangGraph graph ``mode``'s way; the text of the last AI message."""
    if mode == "invoke":
        state = await asyncio.to_thread(agent.invoke, inputs, config)
        return str(state["messages"][-1].content)
    if mode == "ainvoke":
        state = await agent.ainvoke(inputs, config)
        return str(state["messages"][-1].content)
    if mode == "stream":
        updates = await asyncio.to_thread(lambda: list(agent.stream(inputs, config)))
        return str(updates[-1]["model"]["messages"][-1].content)
    if mode == "astream":
        updates = [update async for update in agent.astream(inputs, config)]
        return str(updates[-1]["model"]["messages"][-1].content)
    if mode == "messages":  # token by token: LangGraph makes ChatOpenAI stream
        chunks = await asyncio.to_thread(lambda: list(agent.stream(inputs, config, stream_mode="messages")))
    else:
        chunks = [chunk async for chunk in agent.astream(inputs, config, stream_mode="messages")]
    final = [message for message, meta in chunks if meta.get("langgraph_node") == "model" and message.content]
    return "".join(str(message.content) for message in final)


def make_agent(handler: LightningCallbackHandler) -> agl.LitAgent:
    @agl.rollout
    async def forecaster(task: dict[str, Any], llm: agl.LLM) -> float:
        agent = create_agent(chat_model(llm, max_tokens=64), tools=[get_weather], name="forecaster")
        question = {"messages": [{"role": "user", "content": f"weather in {' and '.join(task['cities'])}"}]}
        answer = await run_agent(agent, question, {"callbacks": [handler]}, task["mode"])
        agl.emit_object({"answer": answer})
        return 1.0 if answer == f"Sunny in {', '.join(task['cities'])}." else 0.0

    return forecaster


@pytest.mark.parametrize("mode", MODES)
def test_agent_run_is_recorded_and_joined_with_the_gateway(
    gateway: agl.Gateway, store: agl.SqliteStore, mode: str
) -> None:
    handler = LightningCallbackHandler()
    trainer = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("scripted")})
    result = trainer.dev(make_agent(handler), [{"cities": ["Paris", "Oslo"], "mode": mode}])
    assert result.succeeded == 1 and result.mean_reward == 1.0
    assert handler.errors == 0
    ((rollout, _),) = result.rollouts
    spans = rollout_spans(store, rollout)

    # The tree: rollout > agent > node > (LLM call | tool call > reward); parents follow LangChain's run ids.
    (root,) = [s for s in spans if s.parent_id is None]
    agent_spans = [s for s in spans if s.attributes.get(semconv.GEN_AI_OPERATION_NAME) == "invoke_agent"]
    if AGENT_NAMES:
        (agent_span,) = agent_spans
        assert agent_span.name == "invoke_agent forecaster"
        assert agent_span.attributes[semconv.GEN_AI_AGENT_NAME] == "forecaster"
    else:
        assert not agent_spans
        (agent_span,) = by_name(spans, "forecaster")
    assert agent_span.parent_id == root.span_id
    model_nodes, tool_nodes = by_name(spans, "model"), by_name(spans, "tools")
    # One tools node for both calls, or (langgraph >= 1.1) one per call, sent in parallel.
    assert len(model_nodes) == 2 and len(tool_nodes) in (1, 2)
    assert all(parent(spans, node) is agent_span for node in model_nodes + tool_nodes)
    assert all(node.attributes["langgraph.node"] == node.name for node in model_nodes + tool_nodes)

    calls = handler_calls(spans)
    assert [c.name for c in calls] == ["chat scripted", "chat scripted"]
    assert [parent(spans, c).span_id for c in calls] == [n.span_id for n in model_nodes]
    first, second = calls
    assert first.kind == agl.SpanKind.CLIENT
    assert first.attributes[semconv.GEN_AI_REQUEST_MODEL] == "scripted"
    assert first.attributes[semconv.GEN_AI_REQUEST_TEMPERATURE] == 0
    assert first.attributes[semconv.GEN_AI_REQUEST_MAX_TOKENS] == 64
    assert first.attributes[semconv.GEN_AI_AGENT_NAME] == AGENT
    assert json.loads(str(first.attributes[semconv.GEN_AI_INPUT_MESSAGES])) == [
        {"role": "user", "content": "weather in Paris and Oslo"}
    ]
    (offered,) = json.loads(str(first.attributes[semconv.GEN_AI_TOOL_DEFINITIONS]))
    assert offered["type"] == "function" and offered["function"]["name"] == "get_weather"
    assert first.attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ["tool_calls"]
    (said,) = json.loads(str(first.attributes[semconv.GEN_AI_OUTPUT_MESSAGES]))
    assert said["role"] == "assistant"
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in said["tool_calls"]] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Oslo"}),
    ]
    history = json.loads(str(second.attributes[semconv.GEN_AI_INPUT_MESSAGES]))
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "tool"]
    assert [m["tool_call_id"] for m in history[2:]] == [c["id"] for c in said["tool_calls"]]
    (answer,) = json.loads(str(second.attributes[semconv.GEN_AI_OUTPUT_MESSAGES]))
    assert answer["content"] == "Sunny in Paris, Oslo."
    if mode in ("invoke", "ainvoke", "stream", "astream"):  # whole answers carry usage and the response id
        assert str(first.attributes[semconv.GEN_AI_RESPONSE_ID]).startswith("chatcmpl")
        assert isinstance(first.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS], int)

    # The two tool calls the model asked for at once, each with its arguments, result and call id.
    tools = sorted(
        by_name(spans, "execute_tool get_weather"), key=lambda s: str(s.attributes["gen_ai.tool.call.arguments"])
    )
    assert [json.loads(str(t.attributes[semconv.GEN_AI_TOOL_CALL_ARGUMENTS])) for t in tools] == [
        {"city": "Oslo"},
        {"city": "Paris"},
    ]
    assert [t.attributes[semconv.GEN_AI_TOOL_CALL_RESULT] for t in tools] == ["sunny in Oslo", "sunny in Paris"]
    assert {t.attributes[semconv.GEN_AI_TOOL_CALL_ID] for t in tools} == {c["id"] for c in said["tool_calls"]}
    assert all(tool_node_of(spans, t) in tool_nodes for t in tools)

    # The rewards emitted in the tools are the tool spans' children; the returned reward is the final one.
    rewards = by_name(spans, semconv.SPAN_REWARD)
    assert sorted(parent(spans, r).span_id for r in rewards[:2]) == sorted(t.span_id for t in tools)
    trajectory = assert_joined(spans, [AGENT, AGENT])
    assert [t.reward for t in trajectory.transitions] == [0.5, None]
    assert trajectory.final_reward == 1.0


def tool_node_of(spans: list[agl.Span], span: agl.Span) -> agl.Span:
    while span.name != "tools":
        span = parent(spans, span)
    return span
