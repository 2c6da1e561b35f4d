"""Overhead of agentlightning-crewai's listener on the crew's run.

    python benchmarks/crewai_overhead.py [--runs 30] [--rounds 25] [--http]

A zero-latency model stands in for the LLM: CrewAI's own native OpenAI provider (``crewai_llm``) over an ``openai``
client whose HTTP transport answers at once, in-process, with a canned chat completion (``httpx.MockTransport``),
so everything measured is CrewAI's and the ``openai`` client's own work plus the listener's. Inside an active
rollout (a real Tracer over an in-memory store), each case runs with CrewAI not instrumented, with a do-nothing
listener (CrewAI's event bus hooked the way ``instrument()`` hooks it, handing each event to a listener that does
nothing: the cost of the hook) and with ``instrument()`` (interleaved rounds, medians):

- one LLM call: ``LLM.call`` with a 12-message conversation and one tool offered (CrewAI emits its started and
  completed events; the listener records a ``chat`` span);
- one crew run: ``Crew.kickoff`` of a solver that calls ``add`` and answers from its result (2 LLM calls, 1 tool
  use, 1 task, 1 agent execution: 6 spans), per run, per LLM call, and as a share of the run.

With ``--http`` the instant model is a server on 127.0.0.1 in a process of its own, so each LLM call also costs
what it costs an agent in production: a real HTTP request (the run is longer, and the listener's share smaller).

CrewAI's own event handlers (its console formatter and the rest) run in its thread pool in every case. Each round
runs in a rollout of its own, and its time includes writing the round's spans to the store (the round ends with a flush; the tracer is a runner's
own, whose writer overlaps the agent as in training, or with ``--held-writes`` one that writes only at the flush:
see ``_overhead.bench_tracer``); what the listener adds is the median of the differences
within a round (see ``_overhead.report``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

# Before CrewAI is imported: no telemetry, no trace uploads or consent prompt, its files in a temporary folder.
os.environ.update(
    CREWAI_DISABLE_TELEMETRY="true",
    CREWAI_DISABLE_TRACKING="true",
    CREWAI_TRACING_ENABLED="false",
    CREWAI_TESTING="true",
    XDG_DATA_HOME=tempfile.mkdtemp(prefix="agl-crewai-bench-"),
)

import httpx
from _overhead import HELD_WRITES_HELP, bench_tracer, instant_model_server, report, rotated, serve_instant_model
from agentlightning_crewai import LightningListener, crewai_llm, instrument, uninstrument
from crewai import LLM, Agent, Crew, Task
from crewai.events.event_bus import CrewAIEventsBus
from crewai.events.types.llm_events import LLMCallCompletedEvent, LLMCallStartedEvent, LLMCallType
from crewai.tools import tool
from openai import OpenAI

import agentlightning as agl
from agentlightning.tracer import Tracer

# CrewAI warns on every call that it estimates the token count of a model it does not know ("instant").
logging.getLogger("crewai.llms.base_llm").setLevel(logging.ERROR)

LABELS = ("not instrumented", "a do-nothing listener", "instrument()")
_errors: list[int] = []  # the listener's failures to record, per instrumented round


def _completion(message: dict[str, Any]) -> dict[str, Any]:
    finish_reason = "tool_calls" if message.get("tool_calls") else "stop"
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "instant",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 12, "total_tokens": 132},
    }


def _answer(body: dict[str, Any]) -> dict[str, Any]:
    """The instant model: with tools offered and no tool result yet, it calls add; otherwise it answers."""
    messages = body["messages"]
    if body.get("tools") and messages[-1]["role"] != "tool" and "Observation" not in str(messages[-1]["content"]):
        call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}
        return _completion({"role": "assistant", "content": None, "tool_calls": [call]})
    return _completion({"role": "assistant", "content": "Thought: done.\nFinal Answer: The answer is 5."})


def answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=_answer(json.loads(request.content)))


@tool("add")
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@contextlib.contextmanager
def do_nothing_listener() -> Iterator[None]:
    """The event bus hooked as instrument() hooks it, each event handed to a listener that does nothing."""
    emit = CrewAIEventsBus.__dict__["emit"]

    def listen(source: Any, event: Any) -> None:
        pass

    @functools.wraps(emit)
    def hooked(self: Any, source: Any, event: Any) -> Any:
        listen(source, event)
        return emit(self, source, event)

    CrewAIEventsBus.emit = hooked  # type: ignore[method-assign]
    try:
        yield
    finally:
        CrewAIEventsBus.emit = emit  # type: ignore[method-assign]


@contextlib.contextmanager
def case(label: str) -> Iterator[None]:
    if label == "nothing":
        with do_nothing_listener():
            yield
    elif label == "lightning":
        listener = instrument()
        try:
            yield
        finally:
            _errors.append(listener.errors)
            uninstrument()
    else:
        yield


def interleaved(
    run: Callable[[], Any] | dict[str, Callable[[], Any]],
    runs: int,
    store: agl.LightningStore,
    tracer: Tracer,
    rounds: int,
) -> dict[str, list[float]]:
    """µs per run of each case in each round (the round's spans written to the store included), each round in a
    rollout of its own, the cases' rounds interleaved."""
    times: dict[str, list[float]] = {label: [] for label in ("none", "nothing", "lightning")}
    for index in range(rounds):
        for label in rotated(list(times), index):
            call = run[label] if isinstance(run, dict) else run
            with case(label if not isinstance(run, dict) else "none"):
                rollout = asyncio.run(store.start_rollout(agl.RolloutRequest(input="bench")))
                gc.collect()
                with tracer.trace_sync(rollout.rollout_id, rollout.attempt.attempt_id):
                    start = time.perf_counter()
                    for _ in range(runs):
                        call()
                    asyncio.run(tracer.flush())
                    times[label].append((time.perf_counter() - start) / runs * 1e6)
    return times


def measure(args: argparse.Namespace, llm: LLM) -> None:
    store = agl.InMemoryStore()
    tracer = bench_tracer(store, held=args.held_writes)
    conversation: list[dict[str, Any]] = [{"role": "system", "content": "You are solver."}]
    for i in range(11):
        text = f"Message {i}: " + "some words of the conversation " * 8
        conversation.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Look something up.",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
            },
        }
    ]

    def one_call() -> None:
        llm.call(conversation, tools=tools)  # type: ignore[arg-type]

    solver = Agent(role="solver", goal="Add numbers.", backstory="You add.", llm=llm, tools=[add])
    crew = Crew(agents=[solver], tasks=[Task(description="what is 2 plus 3", expected_output="a sum", agent=solver)])

    def crew_run() -> None:
        result = crew.kickoff()
        assert "The answer is 5." in result.raw, result.raw

    # The recording alone: the events of one LLM call, made once, handed to the listener (no CrewAI, no HTTP).
    started = LLMCallStartedEvent(messages=conversation, tools=tools, model="instant", call_id="c1")
    completed = LLMCallCompletedEvent(
        messages=conversation,
        response="The answer is 5.",
        call_type=LLMCallType.LLM_CALL,
        model="instant",
        call_id="c1",
    )
    listener = LightningListener()
    listeners = {"none": None, "nothing": lambda source, event: None, "lightning": listener.on_event}

    def recorded(label: str) -> Callable[[], None]:
        listen = listeners[label]

        def call() -> None:
            if listen is not None:
                listen(llm, started)
                listen(llm, completed)

        return call

    report(
        "The recording alone: one LLM call's started and completed events (12 messages, 1 tool) handed to the\n"
        "listener, per call (the 'not instrumented' case does nothing at all)",
        interleaved({label: recorded(label) for label in listeners}, args.runs * 20, store, tracer, args.rounds),
        llm_calls=1,
        labels=("nothing", "a do-nothing function", "LightningListener.on_event"),
    )
    _errors.append(listener.errors)
    interleaved(one_call, 20, store, tracer, rounds=1)  # warm up
    report(
        "One LLM call (LLM.call: 12 messages, 1 tool offered), per call",
        interleaved(one_call, args.runs * 2, store, tracer, args.rounds),
        llm_calls=1,
        labels=LABELS,
    )
    interleaved(crew_run, 5, store, tracer, rounds=1)
    report(
        "One crew run (solver -> add -> answer: 2 LLM calls, 1 tool use, 6 spans), per run",
        interleaved(crew_run, max(args.runs // 5, 1), store, tracer, args.rounds),
        llm_calls=2,
        labels=LABELS,
    )
    tracer.close()
    stats = asyncio.run(store.statistics())
    print(f"listener errors: {sum(_errors)}; spans dropped: {stats.spans_dropped}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="LLM calls per round; crew runs are a fifth of it")
    parser.add_argument("--rounds", type=int, default=25, help="interleaved rounds (default: %(default)s)")
    parser.add_argument("--held-writes", action="store_true", help=HELD_WRITES_HELP)
    parser.add_argument("--http", action="store_true", help="the instant model as a server on 127.0.0.1")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the --http server's own process
    args = parser.parse_args()
    if args.serve:
        serve_instant_model(_answer, args.serve)
        return
    with contextlib.ExitStack() as stack:
        if args.http:
            url = stack.enter_context(instant_model_server(__file__))
            llm = crewai_llm(agl.LLM(base_url=url, model="instant"))
        else:
            url = "http://instant/v1"
            llm = crewai_llm(agl.LLM(base_url=url, model="instant"))
            # CrewAI's OpenAI provider makes its own clients; its sync one is what Crew.kickoff calls through.
            transport = httpx.Client(transport=httpx.MockTransport(answer))
            # (``_client`` in recent versions, ``client`` in 1.0).
            client = OpenAI(api_key="unused", base_url=url, http_client=transport)
            setattr(llm, "_client" if hasattr(llm, "_client") else "client", client)
        measure(args, llm)


if __name__ == "__main__":
    main()
