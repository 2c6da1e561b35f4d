"""Overhead of agentlightning-autogen's hooks on the agent's run.

    python benchmarks/autogen_overhead.py [--runs 60] [--rounds 25]

First the recording alone: a model call to AutoGen's ``ReplayChatCompletionClient`` (canned answers, no HTTP),
bare, through a do-nothing wrapper and through ``LightningChatCompletionClient`` (what instrument() does for each
call, less the core's header hook on the ``openai`` request). Then a zero-latency model stands in for the LLM: AutoGen's own ``OpenAIChatCompletionClient`` over an ``openai`` client
whose HTTP transport answers at once, in-process, with a canned chat completion (``httpx.MockTransport``), so
everything measured is AutoGen's and the ``openai`` client's own work plus the hooks'. Inside an active rollout (a
real Tracer over an in-memory store), each case runs with no hooks, with do-nothing hooks (the same five methods
replaced by wrappers that only call through: the cost of being wrapped) and with ``instrument()`` (interleaved
rounds, medians):

- one LLM call: the model client's ``create`` with a 12-message conversation and one tool offered, inside an
  agent's run (AutoGen's ``invoke_agent`` span, which names the call's agent);
- one agent run: ``AssistantAgent.run`` of an agent that answers at once (one LLM call), per run;
- one team run: a ``RoundRobinGroupChat`` of a writer (calls ``add``, then answers from its result) and a checker
  (approves): 3 LLM calls, 1 tool call, the team run; per run, per LLM call, and as a share of the run;
- the same team run without the time it takes to write the round's spans to the store: what is left on the
  agent's task;
- the same team run with AutoGen's runtime tracing off (``AUTOGEN_DISABLE_RUNTIME_TRACING=true`` when the team is
  made): inside a rollout the core records every OpenTelemetry span, and AutoGen's runtime traces each message
  its agents exchange, which is most of a team run's spans whatever hooks there are.

Agents and teams are reset after each run (timed, the same in every case). Each round runs in a rollout of its own,
and its time includes writing the round's spans to the store (the round ends with a flush; the tracer is a runner's
own, whose writer overlaps the agent as in training, or with ``--held-writes`` one that writes only at the flush:
see ``_overhead.bench_tracer``); what the hooks add is the median of the differences within a round (see
``_overhead.report``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx
from _overhead import (
    HELD_WRITES_HELP,
    bench_tracer,
    report,
    rotated,
)  # benchmarks/_overhead.py: how the overhead benchmarks print a case
from agentlightning_autogen import (
    LOCAL_MODEL_INFO,
    LightningChatCompletionClient,
    LightningRecorder,
    chat_completion_client,
    instrument,
    uninstrument,
)
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import TextMentionTermination
from autogen_agentchat.teams import BaseGroupChat, RoundRobinGroupChat
from autogen_core import CancellationToken, trace_invoke_agent_span
from autogen_core.models import AssistantMessage, CreateResult, LLMMessage, SystemMessage, UserMessage
from autogen_core.tools import BaseStreamTool, BaseTool, FunctionTool
from autogen_ext.models.openai import BaseOpenAIChatCompletionClient
from autogen_ext.models.replay import ReplayChatCompletionClient

import agentlightning as agl
from agentlightning.tracer import Tracer

LABELS = ("no hooks", "do-nothing hooks", "instrument()")
_errors: list[int] = []  # the recorder's failures to record, per instrumented round


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


def answer(request: httpx.Request) -> httpx.Response:
    """The instant model: the writer calls add, then answers from its result; anyone else answers at once."""
    body = json.loads(request.content)
    messages = body["messages"]
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    if "writer" in system and messages[-1]["role"] != "tool":
        call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
    elif "checker" in system:
        message = {"role": "assistant", "content": "APPROVE"}
    else:
        message = {"role": "assistant", "content": "The answer is 5."}
    return httpx.Response(200, json=_completion(message))


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@contextmanager
def do_nothing_hooks() -> Iterator[None]:
    """The methods instrument() replaces, replaced by wrappers that only call the originals."""
    create, create_stream = BaseOpenAIChatCompletionClient.create, BaseOpenAIChatCompletionClient.create_stream
    run_json, run_json_stream, run_stream = BaseTool.run_json, BaseStreamTool.run_json_stream, BaseGroupChat.run_stream

    async def _create(self: Any, messages: Sequence[Any], **kwargs: Any) -> Any:
        return await create(self, messages, **kwargs)

    async def _create_stream(self: Any, messages: Sequence[Any], **kwargs: Any) -> AsyncGenerator[Any, None]:
        async for item in create_stream(self, messages, **kwargs):
            yield item

    async def _run_json(self: Any, args: Any, token: CancellationToken, call_id: str | None = None) -> Any:
        return await run_json(self, args, token, call_id=call_id)

    async def _run_json_stream(
        self: Any, args: Any, token: CancellationToken, call_id: str | None = None
    ) -> AsyncGenerator[Any, None]:
        async for item in run_json_stream(self, args, token, call_id=call_id):
            yield item

    async def _run_stream(self: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        async for item in run_stream(self, **kwargs):
            yield item

    replaced = [
        (BaseOpenAIChatCompletionClient, "create", _create),
        (BaseOpenAIChatCompletionClient, "create_stream", _create_stream),
        (BaseTool, "run_json", _run_json),
        (BaseStreamTool, "run_json_stream", _run_json_stream),
        (BaseGroupChat, "run_stream", _run_stream),
    ]
    originals = [(owner, name, owner.__dict__[name]) for owner, name, _ in replaced]
    for owner, name, function in replaced:
        setattr(owner, name, function)
    try:
        yield
    finally:
        for owner, name, function in originals:
            setattr(owner, name, function)


@contextmanager
def hooks(case: str) -> Iterator[None]:
    if case == "nothing":
        with do_nothing_hooks():
            yield
    elif case == "lightning":
        recorder = instrument()
        try:
            yield
        finally:
            _errors.append(recorder.errors)
            uninstrument()
    else:
        yield


async def interleaved(
    run: Callable[[], Awaitable[Any]] | dict[str, Callable[[], Awaitable[Any]]],
    runs: int,
    store: agl.LightningStore,
    tracer: Tracer,
    rounds: int,
    writing: bool = True,
) -> dict[str, list[float]]:
    """µs per run of each case in each round (``run`` under each case's hooks, or one callable per case; with
    ``writing``, the round's spans written to the store included), each round in a rollout of its own, the cases'
    rounds interleaved."""
    times: dict[str, list[float]] = {label: [] for label in ("none", "nothing", "lightning")}
    for index in range(rounds):
        for label in rotated(list(times), index):
            case = run[label] if isinstance(run, dict) else run
            with hooks(label if not isinstance(run, dict) else "none"):
                rollout = await store.start_rollout(agl.RolloutRequest(input="bench"))
                gc.collect()
                async with tracer.trace(rollout.rollout_id, rollout.attempt.attempt_id):
                    start = time.perf_counter()
                    for _ in range(runs):
                        await case()
                    if writing:
                        await tracer.flush()
                    times[label].append((time.perf_counter() - start) / runs * 1e6)
            await tracer.flush()
    return times


class PassThrough(LightningChatCompletionClient):
    """A wrapping model client that records nothing: what being wrapped costs."""

    async def create(self, messages: Sequence[LLMMessage], **kwargs: Any) -> CreateResult:
        return await self.client.create(messages, **kwargs)


def make_team(llm: agl.LLM, http_client: httpx.AsyncClient) -> RoundRobinGroupChat:
    client = chat_completion_client(llm, http_client=http_client)
    writer = AssistantAgent(
        "writer", model_client=client, tools=[add], system_message="You are writer.", reflect_on_tool_use=True
    )
    checker = AssistantAgent("checker", model_client=client, system_message="You are checker.")
    return RoundRobinGroupChat([writer, checker], termination_condition=TextMentionTermination("APPROVE"))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=60, help="runs per round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=25, help="interleaved rounds (default: %(default)s)")
    parser.add_argument("--held-writes", action="store_true", help=HELD_WRITES_HELP)
    args = parser.parse_args()
    store = agl.InMemoryStore()
    tracer = bench_tracer(store, held=args.held_writes)
    http_client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    llm = agl.LLM(base_url="http://instant/v1", model="instant")
    single = AssistantAgent("solver", model_client=chat_completion_client(llm, http_client=http_client))
    team = make_team(llm, http_client)
    os.environ["AUTOGEN_DISABLE_RUNTIME_TRACING"] = "true"
    quiet_team = make_team(llm, http_client)  # its runtime, made now, traces nothing
    del os.environ["AUTOGEN_DISABLE_RUNTIME_TRACING"]
    token = CancellationToken()
    client = chat_completion_client(llm, http_client=http_client)
    conversation: list[LLMMessage] = [SystemMessage(content="You are solver.")]
    for i in range(11):
        text = f"Message {i}: " + "some words of the conversation " * 8
        conversation.append(
            UserMessage(content=text, source="user") if i % 2 == 0 else AssistantMessage(content=text, source="solver")
        )
    tools = [FunctionTool(add, description="Add two numbers.")]

    async def one_call() -> None:
        with trace_invoke_agent_span("solver"):
            await client.create(conversation, tools=tools)

    replay = ReplayChatCompletionClient(["The answer is 5."], model_info=LOCAL_MODEL_INFO)
    recorder = LightningRecorder()
    clients = {
        "none": replay,
        "nothing": PassThrough(replay),
        "lightning": LightningChatCompletionClient(replay, recorder=recorder),
    }

    def recorded_call(label: str) -> Callable[[], Awaitable[None]]:
        async def call() -> None:
            with trace_invoke_agent_span("solver"):
                await clients[label].create(conversation, tools=tools)
            replay.reset()

        return call

    recorder_only = {label: recorded_call(label) for label in clients}

    async def agent_run() -> None:
        await single.run(task="hi")
        await single.on_reset(token)

    def team_run(team: RoundRobinGroupChat) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            result = await team.run(task="what is 2 plus 3")
            assert len(result.messages) == 5, result.messages  # task, tool request and result, answer, APPROVE
            await team.reset()

        return run

    await interleaved(recorder_only, 20, store, tracer, rounds=1)  # warm up
    report(
        "The recording alone: a model call that returns at once (AutoGen's ReplayChatCompletionClient: no HTTP;\n"
        "12 messages, 1 tool offered, inside an agent's run), wrapped in LightningChatCompletionClient, per call",
        await interleaved(recorder_only, args.runs * 5, store, tracer, args.rounds),
        llm_calls=1,
        labels=("the client itself", "a do-nothing wrapper", "LightningChatCompletionClient"),
    )
    await interleaved(one_call, 20, store, tracer, rounds=1)
    report(
        "One LLM call (model client's create: 12 messages, 1 tool offered, inside an agent's run), per call",
        await interleaved(one_call, args.runs, store, tracer, args.rounds),
        llm_calls=1,
        labels=LABELS,
    )
    await interleaved(agent_run, 20, store, tracer, rounds=1)
    report(
        "One agent run (AssistantAgent.run of an agent that answers at once: 1 LLM call), per run",
        await interleaved(agent_run, args.runs, store, tracer, args.rounds),
        llm_calls=1,
        labels=LABELS,
    )
    await interleaved(team_run(team), 10, store, tracer, rounds=1)
    report(
        "One team run (RoundRobinGroupChat: writer -> add -> answer, checker -> APPROVE: 3 LLM calls), per run",
        await interleaved(team_run(team), args.runs // 4, store, tracer, args.rounds),
        llm_calls=3,
        labels=LABELS,
    )
    report(
        "The same team run, the spans' writing to the store left out (what is left on the agent's task), per run",
        await interleaved(team_run(team), args.runs // 4, store, tracer, args.rounds, writing=False),
        llm_calls=3,
        labels=LABELS,
    )
    await interleaved(team_run(quiet_team), 10, store, tracer, rounds=1)
    report(
        "The same team run, AutoGen's runtime tracing off (AUTOGEN_DISABLE_RUNTIME_TRACING=true), per run",
        await interleaved(team_run(quiet_team), args.runs // 4, store, tracer, args.rounds),
        llm_calls=3,
        labels=LABELS,
    )
    tracer.close()
    print(
        f"recorder errors: {sum(_errors) + recorder.errors}; spans dropped: {(await store.statistics()).spans_dropped}"
    )
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
