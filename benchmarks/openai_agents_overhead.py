"""Overhead of agentlightning-openai-agents' tracing processor on the agent's run.

    python benchmarks/openai_agents_overhead.py [--runs 60] [--rounds 25] [--http]

A zero-latency model stands in for the LLM: the SDK's own ``OpenAIChatCompletionsModel`` over an ``openai`` client
whose HTTP transport answers at once, in-process, with a canned chat completion (``httpx.MockTransport``), so
everything measured is the SDK's and the ``openai`` client's own work plus the processors'. Inside an active
rollout (a real Tracer over an in-memory store), each case runs with no trace processor (the SDK still makes its
spans), with a do-nothing processor, and with ``LightningTracingProcessor`` (interleaved rounds, medians):

- one LLM call: ``Runner.run`` of one agent answering at once (a trace, an agent span, one generation);
- one triage run: triage -> handoff -> a math agent that calls two tools at once -> its answer (3 LLM calls,
  2 tool calls, a handoff: 9 spans), per run, per LLM call, and as a share of the run.

With ``--http`` the instant model is a server on 127.0.0.1 in a process of its own, so each LLM call also costs
what it costs an agent in production: a real HTTP request (the run is longer, and the processor's share smaller).

Each round runs in a rollout of its own, and its time includes writing the round's spans to the store (the round ends with a flush; the tracer is a runner's
own, whose writer overlaps the agent as in training, or with ``--held-writes`` one that writes only at the flush:
see ``_overhead.bench_tracer``); what the processor adds is the median of the
differences within a round (see ``_overhead.report``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from _overhead import (  # benchmarks/_overhead.py: how the overhead benchmarks measure and print a case
    HELD_WRITES_HELP,
    bench_tracer,
    instant_model_server,
    report,
    rotated,
    serve_instant_model,
)
from agentlightning_openai_agents import LightningTracingProcessor, chat_completions_model
from agents import Agent, Runner, function_tool, set_trace_processors
from agents.tracing import TracingProcessor
from openai import AsyncOpenAI

import agentlightning as agl
from agentlightning.tracer import Tracer


def _completion(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "instant",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 12, "total_tokens": 132},
    }


def _call(name: str, call_id: str, **arguments: Any) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def answer(request: httpx.Request) -> httpx.Response:
    """The instant model: triage hands off to math; math calls add twice, then answers; anyone else answers."""
    return httpx.Response(200, json=_answer(json.loads(request.content)))


def _answer(body: dict[str, Any]) -> dict[str, Any]:
    messages = body["messages"]
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    last = messages[-1]
    if "triage" in system:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None,
            "tool_calls": [_call("transfer_to_math", "h1")],
        }
    elif "math" in system and last["role"] == "tool" and "assistant" in str(last.get("content")):
        calls = [_call("add", "c1", a=2, b=3), _call("add", "c2", a=1, b=1)]
        message = {"role": "assistant", "content": None, "tool_calls": calls}
    else:
        message = {"role": "assistant", "content": "The answer is 5."}
    return _completion(message)


@function_tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


class DoNothing(TracingProcessor):
    """A processor that processes nothing: what the SDK's dispatch to a processor costs by itself."""

    def on_trace_start(self, trace: Any) -> None:
        pass

    def on_trace_end(self, trace: Any) -> None:
        pass

    def on_span_start(self, span: Any) -> None:
        pass

    def on_span_end(self, span: Any) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self) -> None:
        pass


async def interleaved(
    cases: dict[str, tuple[list[TracingProcessor], Callable[[], Awaitable[Any]]]],
    runs: int,
    store: agl.LightningStore,
    tracer: Tracer,
    rounds: int,
) -> dict[str, list[float]]:
    """µs per run of each case in each round (the round's spans written to the store included), each round in a
    rollout of its own, the cases' rounds interleaved."""
    times: dict[str, list[float]] = {label: [] for label in cases}
    for index in range(rounds):
        for label, (processors, run) in rotated(cases, index):
            set_trace_processors(processors)
            rollout = await store.start_rollout(agl.RolloutRequest(input="bench"))
            async with tracer.trace(rollout.rollout_id, rollout.attempt.attempt_id):
                start = time.perf_counter()
                for _ in range(runs):
                    await run()
                await tracer.flush()
                times[label].append((time.perf_counter() - start) / runs * 1e6)
    return times


LABELS = ("no trace processor", "a do-nothing processor", "LightningTracingProcessor")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=60, help="runs per round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=25, help="interleaved rounds (default: %(default)s)")
    parser.add_argument("--held-writes", action="store_true", help=HELD_WRITES_HELP)
    parser.add_argument("--http", action="store_true", help="the instant model as a server on 127.0.0.1")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the --http server's own process
    args = parser.parse_args()
    if args.serve:
        serve_instant_model(_answer, args.serve)
    else:
        asyncio.run(run(args))


async def run(args: argparse.Namespace) -> None:
    with contextlib.ExitStack() as stack:
        if args.http:
            url = stack.enter_context(instant_model_server(__file__))
            client = AsyncOpenAI(api_key="unused", base_url=url)
        else:
            url = "http://instant/v1"
            transport = httpx.MockTransport(answer)
            client = AsyncOpenAI(api_key="unused", base_url=url, http_client=httpx.AsyncClient(transport=transport))
        await measure(args, chat_completions_model(agl.LLM(base_url=url, model="instant"), client=client))


async def measure(args: argparse.Namespace, model: Any) -> None:
    store = agl.InMemoryStore()
    tracer = bench_tracer(store, held=args.held_writes)
    processor = LightningTracingProcessor()
    single = Agent(name="solver", instructions="You are a solver.", model=model)
    math = Agent(name="math", instructions="You are math.", tools=[add], model=model)
    triage = Agent(name="triage", instructions="You are triage.", handoffs=[math], model=model)

    def cases(
        agent: Agent[Any], question: str
    ) -> dict[str, tuple[list[TracingProcessor], Callable[[], Awaitable[Any]]]]:
        def run() -> Awaitable[Any]:
            return Runner.run(agent, question)

        return {"none": ([], run), "nothing": ([DoNothing()], run), "lightning": ([processor], run)}

    await interleaved(cases(single, "hi"), 20, store, tracer, rounds=1)  # warm up
    report(
        "One LLM call (Runner.run of one agent that answers at once), per run",
        await interleaved(cases(single, "hi"), args.runs, store, tracer, args.rounds),
        llm_calls=1,
        labels=LABELS,
    )
    await interleaved(cases(triage, "what is 2 plus 3"), 10, store, tracer, rounds=1)
    report(
        "One triage run (triage -> handoff -> math: 2 parallel tool calls -> answer: 3 LLM calls, 9 spans), per run",
        await interleaved(cases(triage, "what is 2 plus 3"), args.runs // 2, store, tracer, args.rounds),
        llm_calls=3,
        labels=LABELS,
    )
    tracer.close()
    print(f"processor errors: {processor.errors}; spans dropped: {(await store.statistics()).spans_dropped}")
    await store.close()


if __name__ == "__main__":
    main()
