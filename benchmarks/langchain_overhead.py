"""Overhead of agentlightning-langchain's callback handler on the agent's thread.

    python benchmarks/langchain_overhead.py [--calls 200] [--runs 20] [--rounds 35] [--store memory|sqlite]
                                            [--messages 12] [--chat-openai | --http]

A zero-latency chat model (a LangChain ``BaseChatModel`` that returns a canned message at once) stands in for the
LLM, so everything measured is LangChain's own work plus the callbacks'. Inside an active rollout (a real Tracer over
the store), each case runs with no handler, with a do-nothing handler (LangChain's own cost of dispatching callbacks)
and with ``LightningCallbackHandler`` (interleaved rounds, medians):

- one LLM call: ``model.invoke`` of a 12-message conversation (``--messages``) with one tool offered (one span:
  start and end, messages and tools serialised, the agent name resolved);
- one agent run: ``create_agent`` (model -> two parallel tool calls -> model: 2 LLM calls, 2 tool calls, the graph
  and its 4 node runs), per run, per LLM call, and as a share of the run.

With ``--chat-openai`` the model is ``ChatOpenAI`` (what an agent trained through the gateway calls) over an
``openai`` client whose HTTP transport gives the same answers at once, in-process: the request is built and the
answer parsed, as ``openai_agents_overhead.py`` does for the Agents SDK. With ``--http`` the model is ``ChatOpenAI``
talking to the same instant answers served on 127.0.0.1 by a process of its own, so each LLM call also costs what it
costs an agent in production: a real HTTP request through the ``openai`` client (the run is longer, and the
handler's share smaller).

Each round runs in a rollout of its own, and its time includes writing the
round's spans to the store: the round ends with a flush, so all that recording costs is counted where it belongs.
The tracer is a runner's own, whose writer thread writes while the agent runs as in training (``--held-writes``:
one that writes only at the flush, overlapping nothing; see ``_overhead.bench_tracer``). The rounds of the
three cases are interleaved and what the handler adds is the median of differences within a round: on a shared
virtual machine the CPU's speed drifts by tens of percent within seconds, which a difference of sums over long
stretches would take for overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ["LANGCHAIN_TRACING_V2"] = os.environ["LANGSMITH_TRACING"] = "false"

from _overhead import (  # benchmarks/_overhead.py: how the overhead benchmarks measure and print a case
    HELD_WRITES_HELP,
    bench_tracer,
    instant_model_server,
    report,
    rotated,
    serve_instant_model,
)
from agentlightning_langchain import LightningCallbackHandler
from langchain.agents import create_agent
from langchain_core.callbacks import BaseCallbackHandler, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool

import agentlightning as agl
from agentlightning.tracer import Tracer


class InstantModel(BaseChatModel):
    """Answers at once: two tool calls when the last message is the user's, else a final answer."""

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if isinstance(messages[-1], HumanMessage):
            calls = [{"name": "lookup", "args": {"key": k}, "id": f"call_{k}", "type": "tool_call"} for k in "ab"]
            message = AIMessage("", tool_calls=calls, usage_metadata=_USAGE)
        else:
            message = AIMessage("The answer is 42.", usage_metadata=_USAGE)
        message.response_metadata = {"id": "chatcmpl-bench", "model_name": "instant", "finish_reason": "stop"}
        return ChatResult(generations=[ChatGeneration(message=message)], llm_output={"id": "chatcmpl-bench"})

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self.bind(tools=[{"type": "function", "function": {"name": "lookup"}}] * len(tools))

    @property
    def _llm_type(self) -> str:
        return "instant"


_USAGE: Any = {"input_tokens": 120, "output_tokens": 12, "total_tokens": 132}


def _answer(body: dict[str, Any]) -> dict[str, Any]:
    """InstantModel's answers as a chat-completions response (``--http``)."""
    if body["messages"][-1]["role"] == "user":
        calls = [
            {"id": f"call_{k}", "type": "function", "function": {"name": "lookup", "arguments": f'{{"key": "{k}"}}'}}
            for k in "ab"
        ]
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": calls}
    else:
        message = {"role": "assistant", "content": "The answer is 42."}
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "instant",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 12, "total_tokens": 132},
    }


def chat_openai(base_url: str, http_client: Any = None) -> BaseChatModel:
    """``ChatOpenAI`` on the instant answers at ``base_url`` (``--http``: a server on 127.0.0.1)."""
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model="instant", base_url=base_url, api_key="unused", max_retries=0, http_client=http_client)  # type: ignore[arg-type]


def instant_chat_openai() -> BaseChatModel:
    """``ChatOpenAI`` over an ``openai`` client whose HTTP transport gives InstantModel's answers at once, in-process."""
    import json

    import httpx

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=_answer(json.loads(request.content)))

    return chat_openai("http://instant/v1", httpx.Client(transport=httpx.MockTransport(answer)))


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


def conversation(length: int = 12) -> list[BaseMessage]:
    """A system prompt, questions each answered with a tool call, the last call's result and one more question:
    ``length`` messages (an even number, at least 4)."""
    messages: list[BaseMessage] = [SystemMessage("You are a careful assistant. " * 8)]
    for i in range((length - 2) // 2):
        messages.append(HumanMessage(f"Question {i}: what is the value of key {i}? " * 3))
        call = {"name": "lookup", "args": {"key": str(i)}, "id": f"call_{i}", "type": "tool_call"}
        messages.append(AIMessage("", tool_calls=[call]))
    messages[-1] = ToolMessage(f"value {i}", tool_call_id=f"call_{i}")
    messages.append(HumanMessage("And now?"))
    return messages


class DoNothing(BaseCallbackHandler):
    """A handler that handles nothing: what LangChain's callback machinery costs by itself once any handler is
    attached (it then builds run ids, serialises runnables, dispatches every event)."""

    run_inline = True

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        """Handled, as LightningCallbackHandler handles it: a handler without it makes LangChain fall back to
        ``on_llm_start`` with the messages rendered as text, a cost LightningCallbackHandler does not cause."""


async def interleaved(
    cases: dict[str, Callable[[], Any]], calls: int, store: agl.LightningStore, tracer: Tracer, rounds: int
) -> dict[str, list[float]]:
    """µs per call of each case in each round (the round's spans written to the store included), each round inside
    a rollout of its own, the cases' rounds interleaved."""
    times: dict[str, list[float]] = {label: [] for label in cases}
    for index in range(rounds):
        for label, fn in rotated(cases, index):
            rollout = await store.start_rollout(agl.RolloutRequest(input="bench"))
            with tracer.trace_sync(rollout.rollout_id, rollout.attempt.attempt_id):
                start = time.perf_counter()
                for _ in range(calls):
                    fn()
                await tracer.flush()
                times[label].append((time.perf_counter() - start) / calls * 1e6)
    return times


LABELS = ("no handler", "a do-nothing handler", "LightningCallbackHandler")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="LLM calls per round (default: %(default)s)")
    parser.add_argument(
        "--messages", type=int, default=12, help="messages in the one-call case's conversation (default: %(default)s)"
    )
    parser.add_argument("--runs", type=int, default=20, help="agent runs per round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=35, help="interleaved rounds (default: %(default)s)")
    parser.add_argument("--held-writes", action="store_true", help=HELD_WRITES_HELP)
    parser.add_argument("--store", choices=["sqlite", "memory"], default="memory")
    models = parser.add_mutually_exclusive_group()
    models.add_argument("--chat-openai", action="store_true", help="ChatOpenAI over an instant in-process transport")
    models.add_argument("--http", action="store_true", help="ChatOpenAI and the instant answers over HTTP")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the --http server's own process
    args = parser.parse_args()
    if args.messages < 4 or args.messages % 2:
        parser.error("--messages must be an even number, at least 4")
    if args.serve:
        serve_instant_model(_answer, args.serve)
        return
    if not args.http:
        asyncio.run(measure(args, instant_chat_openai if args.chat_openai else InstantModel))
        return
    with instant_model_server(__file__) as url:
        asyncio.run(measure(args, lambda: chat_openai(url)))


async def measure(args: argparse.Namespace, make_model: Callable[[], BaseChatModel]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store: agl.LightningStore = (
            agl.SqliteStore(Path(tmp) / "t.db") if args.store == "sqlite" else agl.InMemoryStore()
        )
        tracer = bench_tracer(store, held=args.held_writes)
        handler = LightningCallbackHandler()
        configs: dict[str, Any] = {
            "none": {"metadata": {"agent_name": "bench"}},
            "nothing": {"metadata": {"agent_name": "bench"}, "callbacks": [DoNothing()]},
            "lightning": {"metadata": {"agent_name": "bench"}, "callbacks": [handler]},
        }
        model = make_model().bind_tools([lookup])
        messages = conversation(args.messages)
        calls = {label: (lambda c=config: model.invoke(messages, c)) for label, config in configs.items()}
        await interleaved(calls, 100, store, tracer, rounds=1)  # warm up
        report(
            f"One LLM call (model.invoke: {len(messages)} messages, 1 tool offered), per call",
            await interleaved(calls, args.calls, store, tracer, args.rounds),
            llm_calls=1,
            labels=LABELS,
        )

        agent = create_agent(make_model(), tools=[lookup], name="bench")
        inputs = {"messages": [HumanMessage("What are the values of a and b?")]}
        runs = {label: (lambda c=config: agent.invoke(inputs, c)) for label, config in configs.items()}
        await interleaved(runs, 10, store, tracer, rounds=1)  # warm up
        report(
            "One agent run (create_agent: 2 LLM calls, 2 parallel tool calls, 9 spans), per run",
            await interleaved(runs, args.runs, store, tracer, args.rounds),
            llm_calls=2,
            labels=LABELS,
        )
        tracer.close()
        print(f"handler errors: {handler.errors}; spans dropped: {(await store.statistics()).spans_dropped}")
        await store.close()


if __name__ == "__main__":
    main()
