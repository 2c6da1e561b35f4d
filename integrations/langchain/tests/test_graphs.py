"""LangGraph graphs of several agents: a SQL writer and a checker (train the writer only), two agents calling the
model at the same moment (each call joined with its own gateway span), nested graphs, rewards from nodes."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, TypedDict

import pytest
from agentlightning_langchain import LightningCallbackHandler
from conftest import ancestors, assert_joined, by_name, chat_model, handler_calls, parent, rollout_spans
from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, StateGraph

import agentlightning as agl
from agentlightning import semconv


class SQLState(TypedDict, total=False):
    question: str
    query: str
    verdict: str


def writer_checker(llm: agl.LLM) -> Any:
    """A writer turns the question into SQL; a checker judges it, and the node rewards a query it accepts."""
    model = chat_model(llm, max_tokens=16)

    def writer(state: SQLState) -> SQLState:
        message = model.invoke([HumanMessage(f"write SQL for: {state['question']}")])
        return {"query": str(message.content)}

    def checker(state: SQLState) -> SQLState:
        verdict = str(model.invoke([HumanMessage(f"check: {state['query']}")]).content)
        agl.emit_reward(1.0 if verdict == "OK" else 0.0)  # inside the node: the checker's judgement
        return {"verdict": verdict}

    graph = StateGraph(SQLState).add_node("writer", writer).add_node("checker", checker)
    return graph.add_edge(START, "writer").add_edge("writer", "checker").add_edge("checker", END).compile()


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_only_the_writers_calls_are_trained_when_the_writer_is_selected(
    gateway: agl.Gateway, store: agl.SqliteStore, asynchronous: bool
) -> None:
    handler = LightningCallbackHandler()

    @agl.rollout
    async def sql_agent(task: dict[str, Any], llm: agl.LLM) -> float:
        graph, config = writer_checker(llm), {"callbacks": [handler]}
        if asynchronous:
            state = await graph.ainvoke({"question": task["question"]}, config)
        else:
            state = await asyncio.to_thread(graph.invoke, {"question": task["question"]}, config)
        return 1.0 if state["query"] == f"SELECT {task['question']} FROM t" else 0.0

    trainer = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("scripted")})
    result = trainer.dev(sql_agent, [{"question": "names"}, {"question": "prices"}])
    assert result.succeeded == 2 and result.mean_reward == 1.0 and handler.errors == 0
    for rollout, _ in result.rollouts:
        spans = rollout_spans(store, rollout)
        everyone = assert_joined(spans, ["writer", "checker"])
        assert [t.agent_name for t in everyone.transitions] == ["writer", "checker"]
        (reward,) = [s for s in by_name(spans, semconv.SPAN_REWARD) if parent(spans, s).name == "checker"]
        assert parent(spans, parent(spans, reward)).name == "LangGraph"

        trajectory = agl.TraceToTrajectory(agents=["writer"]).adapt(spans)
        (call,) = trajectory.transitions
        assert call.agent_name == "writer"
        assert call.input_messages == [{"role": "user", "content": f"write SQL for: {rollout.input['question']}"}]
        assert call.output_messages[0]["content"] == f"SELECT {rollout.input['question']} FROM t"  # type: ignore[index]
        assert call.completion_token_ids and call.logprobs
        # The checker's reward follows the checker's call, so it is not the writer's; the returned one is final.
        assert call.reward is None and trajectory.final_reward == 1.0
        assert trajectory.agents == ["checker", "writer"]


class FanState(TypedDict, total=False):
    question: str
    query: str
    verdict: str


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_parallel_calls_of_two_agents_are_each_joined_with_their_own_gateway_span(
    gateway: agl.Gateway, store: agl.SqliteStore, asynchronous: bool
) -> None:
    handler = LightningCallbackHandler()

    @agl.rollout
    async def fan_out(task: dict[str, Any], llm: agl.LLM) -> float:
        model = chat_model(llm, max_tokens=16)
        graph = StateGraph(FanState)
        if asynchronous:
            together = asyncio.Barrier(2)

            async def writer(state: FanState) -> FanState:
                await together.wait()  # both nodes are running before either calls the model
                return {"query": str((await model.ainvoke([HumanMessage("write SQL for: x")])).content)}

            async def checker(state: FanState) -> FanState:
                await together.wait()
                return {"verdict": str((await model.ainvoke([HumanMessage("check: y")])).content)}
        else:
            barrier = threading.Barrier(2, timeout=30)

            def writer(state: FanState) -> FanState:  # type: ignore[misc]
                barrier.wait()
                return {"query": str(model.invoke([HumanMessage("write SQL for: x")]).content)}

            def checker(state: FanState) -> FanState:  # type: ignore[misc]
                barrier.wait()
                return {"verdict": str(model.invoke([HumanMessage("check: y")]).content)}

        graph.add_node("writer", writer).add_node("checker", checker)
        graph.add_edge(START, "writer").add_edge(START, "checker").add_edge("writer", END).add_edge("checker", END)
        app, config = graph.compile(), {"callbacks": [handler]}
        state = await app.ainvoke({}, config) if asynchronous else await asyncio.to_thread(app.invoke, {}, config)
        return 1.0 if (state["query"], state["verdict"]) == ("SELECT x FROM t", "OK") else 0.0

    trainer = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("scripted")})
    result = trainer.dev(fan_out, [{"i": i} for i in range(3)])
    assert result.succeeded == 3 and result.mean_reward == 1.0 and handler.errors == 0
    for rollout, _ in result.rollouts:
        spans = rollout_spans(store, rollout)
        writer_call, checker_call = sorted(
            handler_calls(spans), key=lambda s: str(s.attributes[semconv.GEN_AI_AGENT_NAME])
        )[::-1]
        assert writer_call.start_time < checker_call.end_time and checker_call.start_time < writer_call.end_time
        trajectory = assert_joined(spans, ["writer", "checker"])
        for transition in trajectory.transitions:  # each transition has its own call's messages and tokens
            asked = transition.input_messages[0]["content"]  # type: ignore[index]
            assert asked == ("write SQL for: x" if transition.agent_name == "writer" else "check: y")
            assert transition.output_messages[0]["content"] == (  # type: ignore[index]
                "SELECT x FROM t" if transition.agent_name == "writer" else "OK"
            )


class Outer(TypedDict, total=False):
    question: str
    answer: str


def test_nested_graphs_nest_their_spans(gateway: agl.Gateway, store: agl.SqliteStore) -> None:
    handler = LightningCallbackHandler()

    @agl.rollout
    async def nested(task: dict[str, Any], llm: agl.LLM) -> float:
        model = chat_model(llm, max_tokens=16)

        async def draft(state: Outer) -> Outer:
            return {"answer": str((await model.ainvoke([HumanMessage(f"write SQL for: {state['question']}")])).content)}

        inner = StateGraph(Outer).add_node("draft", draft).add_edge(START, "draft").add_edge("draft", END)
        compiled_inner = inner.compile(name="drafting")

        async def review(state: Outer) -> Outer:  # a graph invoked inside a node
            reviewed = await compiled_inner.ainvoke({"question": "reviewed"})
            agl.emit_reward(0.5)
            return {"answer": state["answer"] + " / " + reviewed["answer"]}

        outer = StateGraph(Outer).add_node("research", compiled_inner).add_node("review", review)  # a graph as a node
        app = outer.add_edge(START, "research").add_edge("research", "review").add_edge("review", END).compile()
        state = await app.ainvoke({"question": "names"}, {"callbacks": [handler]})
        return 1.0 if state["answer"] == "SELECT names FROM t / SELECT reviewed FROM t" else 0.0

    trainer = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("scripted")})
    result = trainer.dev(nested, [{"q": 1}])
    assert result.succeeded == 1 and result.mean_reward == 1.0 and handler.errors == 0
    spans = rollout_spans(store, result.rollouts[0][0])
    first, second = handler_calls(spans)
    # A graph added as a node runs (under its own name) inside that node; one invoked inside a node nests there too.
    assert ancestors(spans, first) == ["draft", "drafting", "research", "LangGraph", "agentlightning.rollout nested"]
    assert ancestors(spans, second) == ["draft", "drafting", "review", "LangGraph", "agentlightning.rollout nested"]
    (reward,) = [r for r in by_name(spans, semconv.SPAN_REWARD) if r.attributes[semconv.AGL_REWARD_VALUE] == 0.5]
    assert parent(spans, reward).name == "review"
    trajectory = assert_joined(spans, ["draft", "draft"])
    assert [t.reward for t in trajectory.transitions] == [None, 0.5]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_each_call_names_its_agent_to_the_gateway_which_routes_it(
    scripted_server: Any, store: agl.SqliteStore, asynchronous: bool
) -> None:
    """The gateway learns whose call it answers from the request (the handler's current run names the agent), so
    it can send each trained agent's calls to a model of its own (its LoRA adapter) and the others' to the base."""
    handler = LightningCallbackHandler()

    @agl.rollout
    async def sql_agent(task: dict[str, Any], llm: agl.LLM) -> float:
        graph, config = writer_checker(llm), {"callbacks": [handler]}
        if asynchronous:
            await graph.ainvoke({"question": task["question"]}, config)
        else:
            await asyncio.to_thread(graph.invoke, {"question": task["question"]}, config)
        return 1.0

    with agl.Gateway(scripted_server.url, store, agent_models={"writer": "scripted@writer"}) as gateway:
        trainer = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("scripted")})
        result = trainer.dev(sql_agent, [{"question": "names"}])
    assert result.succeeded == 1 and handler.errors == 0
    spans = rollout_spans(store, result.rollouts[0][0])
    recorded = [s for s in spans if s.attributes.get(semconv.AGL_LLM_GATEWAY) is True]
    asked = {s.attributes[semconv.GEN_AI_AGENT_NAME]: s.attributes[semconv.GEN_AI_REQUEST_MODEL] for s in recorded}
    assert asked == {"writer": "scripted@writer", "checker": "scripted"}
