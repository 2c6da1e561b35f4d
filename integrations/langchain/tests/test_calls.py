"""LangChain without a graph: chains and chat models called every way, agent names from each source and their
order, plain LLMs, retrievers, batches, failures (the agent's own exceptions still propagate), and failures of the
handler itself (counted, never raised)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, cast

import openai
import pytest
from agentlightning_langchain import LightningCallbackHandler
from conftest import (
    AGENT_NAMES,
    assert_joined,
    by_name,
    chat_model,
    gateway_calls,
    handler_calls,
    parent,
    rollout_spans,
)
from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseLLM
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import Generation, LLMResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph

import agentlightning as agl
from agentlightning import semconv

PROMPT = ChatPromptTemplate.from_messages([("system", "Be brief."), ("user", "{question}")])


async def call(chain: Any, inputs: Any, config: dict[str, Any], mode: str) -> str:
    if mode == "invoke":
        return str((await asyncio.to_thread(chain.invoke, inputs, config)).content)
    if mode == "ainvoke":
        return str((await chain.ainvoke(inputs, config)).content)
    if mode == "stream":
        return "".join(str(c.content) for c in await asyncio.to_thread(lambda: list(chain.stream(inputs, config))))
    return "".join([str(c.content) async for c in chain.astream(inputs, config)])


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
def test_a_chain_is_recorded_and_its_call_joined_with_the_gateway(
    tiny_gateway: agl.Gateway, store: agl.SqliteStore, mode: str
) -> None:
    handler = LightningCallbackHandler()

    @agl.rollout
    async def agent(task: dict[str, Any], llm: agl.LLM) -> float:
        chain = PROMPT | chat_model(llm, max_tokens=8)
        text = await call(chain, {"question": task["q"]}, {"callbacks": [handler]}, mode)
        agl.emit_object({"text": text})
        return 1.0

    trainer = agl.Trainer(store=store, initial_resources={"llm": tiny_gateway.llm("tiny")})
    result = trainer.dev(agent, [{"q": "Name a colour."}])
    assert result.succeeded == 1 and handler.errors == 0
    spans = rollout_spans(store, result.rollouts[0][0])
    (sequence,) = by_name(spans, "RunnableSequence")
    (prompt,) = by_name(spans, "ChatPromptTemplate")
    (call_span,) = handler_calls(spans)
    assert parent(spans, prompt) is sequence and parent(spans, call_span) is sequence
    assert call_span.name == "chat tiny"
    assert json.loads(str(call_span.attributes[semconv.GEN_AI_INPUT_MESSAGES])) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a colour."},
    ]
    (said,) = json.loads(str(call_span.attributes[semconv.GEN_AI_OUTPUT_MESSAGES]))
    (text,) = [
        json.loads(str(s.attributes[semconv.AGL_OBJECT_JSON]))["text"] for s in by_name(spans, "agentlightning.object")
    ]
    assert said == {"role": "assistant", "content": text}
    assert call_span.attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ["length"]
    (trajectory_call,) = assert_joined(spans, [None]).transitions
    (gateway_span,) = gateway_calls(spans)
    assert gateway_span.parent_id == call_span.span_id  # the gateway's span nests under the call that made it
    if mode in ("invoke", "ainvoke"):
        assert call_span.attributes[semconv.GEN_AI_RESPONSE_ID] == gateway_span.attributes[semconv.GEN_AI_RESPONSE_ID]
    assert trajectory_call.output_messages == json.loads(str(gateway_span.attributes[semconv.GEN_AI_OUTPUT_MESSAGES]))


def test_agent_names_come_from_create_agent_then_metadata_then_the_langgraph_node(
    tiny_gateway: agl.Gateway, store: agl.SqliteStore
) -> None:
    handler = LightningCallbackHandler()
    hi = [HumanMessage("hi")]

    @agl.rollout
    async def agent(task: dict[str, Any], llm: agl.LLM) -> float:
        model = chat_model(llm, max_tokens=2)
        config: Any = {"callbacks": [handler]}
        await model.ainvoke(hi, config)  # no name anywhere
        await model.with_config(metadata={"agent_name": "on_runnable"}).ainvoke(hi, config)
        await model.ainvoke(hi, {**config, "metadata": {"agent_name": "on_call"}})

        async def planner(state: MessagesState) -> dict[str, Any]:
            await model.ainvoke(hi)  # named by its node
            await model.ainvoke(hi, {"metadata": {"agent_name": "named_in_node"}})  # metadata beats the node
            return {}

        graph = StateGraph(MessagesState).add_node("planner", planner)
        await graph.add_edge(START, "planner").add_edge("planner", END).compile().ainvoke({"messages": []}, config)
        # create_agent(name=...) beats metadata (where langchain records it, see AGENT_NAMES).
        from langchain.agents import create_agent

        named = create_agent(model, tools=[], name="created")
        await named.ainvoke({"messages": hi}, {**config, "metadata": {"agent_name": "metadata_loses"}})
        return 1.0

    trainer = agl.Trainer(store=store, initial_resources={"llm": tiny_gateway.llm("tiny")})
    result = trainer.dev(agent, [{"q": "names"}])
    assert result.succeeded == 1 and handler.errors == 0
    spans = rollout_spans(store, result.rollouts[0][0])
    names = [c.attributes.get(semconv.GEN_AI_AGENT_NAME) for c in handler_calls(spans)]
    created = "created" if AGENT_NAMES else "metadata_loses"
    expected = [None, "on_runnable", "on_call", "planner", "named_in_node", created]
    assert names == expected
    trajectory = assert_joined(spans, expected)
    assert [t.agent_name for t in trajectory.transitions] == expected  # in call order
    only = agl.TraceToTrajectory(agents=["planner", "on_call"]).adapt(spans)
    assert [t.agent_name for t in only.transitions] == ["on_call", "planner"]


def test_a_batch_is_joined_by_response_id(tiny_gateway: agl.Gateway, store: agl.SqliteStore) -> None:
    handler = LightningCallbackHandler()

    @agl.rollout
    async def agent(task: dict[str, Any], llm: agl.LLM) -> float:
        # generate() starts both calls before making either: no traceparent can tell them apart.
        await chat_model(llm, max_tokens=4).agenerate(
            [[HumanMessage("one")], [HumanMessage("two")]], callbacks=[handler], metadata={"agent_name": "batcher"}
        )
        return 1.0

    trainer = agl.Trainer(store=store, initial_resources={"llm": tiny_gateway.llm("tiny")})
    result = trainer.dev(agent, [{"q": "batch"}])
    assert result.succeeded == 1 and handler.errors == 0
    spans = rollout_spans(store, result.rollouts[0][0])
    calls = handler_calls(spans)
    assert {json.loads(str(c.attributes[semconv.GEN_AI_INPUT_MESSAGES]))[0]["content"] for c in calls} == {"one", "two"}
    trajectory = agl.TraceToTrajectory().adapt(spans)
    assert [t.agent_name for t in trajectory.transitions] == ["batcher", "batcher"]
    by_id = {str(c.attributes[semconv.GEN_AI_RESPONSE_ID]): c for c in calls}
    for transition in trajectory.transitions:  # each transition has the tokens of the call it names
        assert transition.completion_token_ids
        (message,) = transition.input_messages
        assert isinstance(message, dict)
        call_span = by_id[str(transition.response_id)]
        assert json.loads(str(call_span.attributes[semconv.GEN_AI_INPUT_MESSAGES]))[0]["content"] == message["content"]


class Echo(BaseLLM):
    """A plain (text-completion) LLM that answers in-process; the engine serves chat completions only."""

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        return LLMResult(
            generations=[[Generation(text=p.upper(), generation_info={"finish_reason": "stop"})] for p in prompts],
            llm_output={"model_name": "echo", "token_usage": {"prompt_tokens": 3, "completion_tokens": 3}},
        )

    @property
    def _llm_type(self) -> str:
        return "echo"


class Shelf(BaseRetriever):
    """A retriever over three documents."""

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        docs = [Document("red apples", id="d1"), Document("green pears", id="d2"), Document("red wine", id="d3")]
        return [d for d in docs if query in d.page_content]


def test_plain_llms_and_retrievers_are_recorded(store: agl.SqliteStore) -> None:
    handler = LightningCallbackHandler()

    @agl.rollout
    def agent(task: dict[str, Any]) -> float:
        config: Any = {"callbacks": [handler], "metadata": {"agent_name": "echoer"}}
        assert Echo().invoke("hello", config) == "HELLO"
        assert [d.id for d in Shelf().invoke("red", config)] == ["d1", "d3"]
        return 1.0

    result = agl.Trainer(store=store).dev(agent, [{"q": "plain"}])
    assert result.succeeded == 1 and handler.errors == 0
    spans = rollout_spans(store, result.rollouts[0][0])
    (llm_call,) = handler_calls(spans)
    assert llm_call.name == "text_completion"
    assert llm_call.attributes[semconv.GEN_AI_OPERATION_NAME] == "text_completion"
    assert json.loads(str(llm_call.attributes[semconv.GEN_AI_INPUT_MESSAGES])) == [{"role": "user", "content": "hello"}]
    assert json.loads(str(llm_call.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])) == [
        {"role": "assistant", "content": "HELLO"}
    ]
    assert llm_call.attributes[semconv.GEN_AI_RESPONSE_MODEL] == "echo"
    assert llm_call.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 3
    assert llm_call.attributes[semconv.GEN_AI_AGENT_NAME] == "echoer"
    (retrieval,) = by_name(spans, "retrieve Shelf")
    assert retrieval.attributes["langchain.retriever.query"] == "red"
    assert retrieval.attributes["langchain.retriever.document_count"] == 2
    assert retrieval.attributes["langchain.retriever.document_ids"] == ["d1", "d3"]
    (transition,) = agl.TraceToTrajectory(agents=["echoer"]).adapt(spans).transitions
    assert transition.output_messages == [{"role": "assistant", "content": "HELLO"}]


def test_each_call_records_its_conversation_as_it_is_then_however_the_messages_were_reused_or_changed(
    store: agl.SqliteStore,
) -> None:
    handler = LightningCallbackHandler()
    asked = AIMessage("", tool_calls=[{"name": "lookup", "args": {"key": "a"}, "id": "call_a", "type": "tool_call"}])
    answer = ToolMessage([{"type": "text", "text": "value a"}], tool_call_id="call_a")
    conversation: list[BaseMessage] = [SystemMessage("Be brief."), HumanMessage("a?"), asked, answer]

    @agl.rollout
    def agent(task: dict[str, Any]) -> float:
        model = FakeMessagesListChatModel(responses=[AIMessage("one"), AIMessage("two"), AIMessage("three")])
        config: Any = {"callbacks": [handler]}
        conversation.append(model.invoke(conversation, config))  # its answer goes on in the next call's input
        model.invoke(conversation, config)
        asked.tool_calls[0]["args"]["key"] = "b"  # changed in place
        cast(list[Any], answer.content)[0]["text"] = "value b"
        conversation[1].content = "b?"  # replaced
        model.invoke(conversation, config)
        return 1.0

    result = agl.Trainer(store=store).dev(agent, [{"q": "reused"}])
    assert result.succeeded == 1 and handler.errors == 0
    calls = handler_calls(rollout_spans(store, result.rollouts[0][0]))
    inputs = [json.loads(str(c.attributes[semconv.GEN_AI_INPUT_MESSAGES])) for c in calls]
    outputs = [json.loads(str(c.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])) for c in calls]

    def asking(key: str) -> dict[str, Any]:
        call = {"id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": f'{{"key":"{key}"}}'}}
        return {"role": "assistant", "content": "", "tool_calls": [call]}

    def answering(text: str) -> dict[str, Any]:
        return {"role": "tool", "content": [{"type": "text", "text": text}], "tool_call_id": "call_a"}

    system = {"role": "system", "content": "Be brief."}
    first = [system, {"role": "user", "content": "a?"}, asking("a"), answering("value a")]
    assert inputs[0] == first and outputs[0] == [{"role": "assistant", "content": "one"}]
    assert inputs[1] == [*first, {"role": "assistant", "content": "one"}]
    assert inputs[2] == [system, {"role": "user", "content": "b?"}, asking("b"), answering("value b"), outputs[0][0]]


@tool
def broken(x: int) -> str:
    """A tool that fails."""
    raise ValueError(f"broken tool got {x}")


def test_a_failing_tool_and_a_failing_llm_call_are_error_spans_and_the_agent_sees_its_exceptions(
    tiny_gateway: agl.Gateway, store: agl.SqliteStore
) -> None:
    handler = LightningCallbackHandler()
    seen: list[str] = []

    @agl.rollout
    async def agent(task: dict[str, Any], llm: agl.LLM) -> float:
        config: Any = {"callbacks": [handler]}
        image: Any = [{"type": "image_url", "image_url": {"url": "data:,"}}]
        try:  # the engine refuses images: a 400 from the gateway
            await chat_model(llm, max_tokens=2).ainvoke([HumanMessage(image)], config)
        except openai.BadRequestError as exc:  # (newer langchain-openai raises a subclass of its own)
            seen.append(type(exc).__qualname__)
        await broken.ainvoke({"x": 7}, config)  # propagates: fails the rollout
        return 1.0

    trainer = agl.Trainer(store=store, initial_resources={"llm": tiny_gateway.llm("tiny")})
    result = trainer.dev(agent, [{"q": "fail"}])
    assert result.succeeded == 0 and len(seen) == 1 and handler.errors == 0
    spans = rollout_spans(store, result.rollouts[0][0])
    (call_span,) = handler_calls(spans)
    assert call_span.status.status_code == agl.StatusCode.ERROR
    assert call_span.attributes[semconv.ERROR_TYPE] == seen[0]  # what the agent caught
    assert "only text parts" in str(call_span.status.description)
    (gateway_span,) = gateway_calls(spans)
    assert gateway_span.status.status_code == agl.StatusCode.ERROR and gateway_span.parent_id == call_span.span_id
    (tool_span,) = by_name(spans, "execute_tool broken")
    assert tool_span.status.status_code == agl.StatusCode.ERROR
    assert tool_span.attributes[semconv.ERROR_TYPE] == "ValueError"
    assert tool_span.status.description == "broken tool got 7"
    (failure,) = by_name(spans, semconv.SPAN_EXCEPTION)  # the runner's record of the rollout's failure
    assert failure.attributes[semconv.EXCEPTION_TYPE] == "ValueError"
    assert agl.TraceToTrajectory().adapt(spans).transitions == []  # failed calls are not trained on


def test_a_failure_inside_the_handler_is_logged_and_counted_never_raised(
    tiny_gateway: agl.Gateway, store: agl.SqliteStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from agentlightning_langchain import _messages

    def explode(*args: Any) -> Any:
        raise RuntimeError("handler bug")

    monkeypatch.setattr(_messages, "response_attributes", explode)
    handler = LightningCallbackHandler()

    @agl.rollout
    async def agent(task: dict[str, Any], llm: agl.LLM) -> float:
        chain = PROMPT | chat_model(llm, max_tokens=2)
        message = await chain.ainvoke({"question": "hi"}, {"callbacks": [handler]})
        return 1.0 if isinstance(message.content, str) else 0.0

    trainer = agl.Trainer(store=store, initial_resources={"llm": tiny_gateway.llm("tiny")})
    with caplog.at_level(logging.ERROR, logger="agentlightning.langchain"):
        result = trainer.dev(agent, [{"q": "bug"}])
    assert result.succeeded == 1 and result.mean_reward == 1.0  # the run went on
    assert handler.errors == 1
    assert any(
        "on_llm_end failed" in r.getMessage() and "handler bug" in r.exc_text for r in caplog.records if r.exc_text
    )
    spans = rollout_spans(store, result.rollouts[0][0])
    assert by_name(spans, "RunnableSequence") and by_name(spans, "ChatPromptTemplate")  # the rest is recorded
