"""Fixtures: a scripted engine that plays CrewAI agents (a solver with a tool, a writer and a checker) behind a real
gateway on 127.0.0.1, a SQLite store per test, the package instrumented, CrewAI's files in a temporary folder
instead of the user's home, and guards that fail any test whose process tries to reach another machine."""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

# Before CrewAI is imported: it decides on import whether its telemetry is on, and appdirs puts its files (user
# data, memory, the first-run marker) under HOME. Nothing may leave this machine, even with a key set.
_HOME = tempfile.mkdtemp(prefix="agl-crewai-home-")
os.environ.update(
    HOME=_HOME,
    XDG_DATA_HOME=os.path.join(_HOME, ".local", "share"),
    CREWAI_STORAGE_DIR="agentlightning-tests",
    CREWAI_DISABLE_TELEMETRY="true",
    CREWAI_DISABLE_TRACKING="true",
    CREWAI_TRACING_ENABLED="false",
    CREWAI_TESTING="true",
    OPENAI_API_KEY="sk-test-never-sent",
    HF_HUB_OFFLINE="1",
)

from agentlightning_crewai import LightningListener, instrument, uninstrument  # noqa: E402
from agentlightning_engine import EngineServer  # noqa: E402
from agentlightning_engine.testing import serve_scripted  # noqa: E402

import agentlightning as agl  # noqa: E402
from agentlightning import semconv  # noqa: E402
from agentlightning.testing import is_gateway as is_gateway  # noqa: E402
from agentlightning.testing import no_outbound_connections as no_outbound_connections  # noqa: E402  # autouse
from agentlightning.testing import rollout_spans as rollout_spans  # noqa: E402
from agentlightning.testing import store as store  # noqa: E402  # the fixture

HOME = _HOME
_LOOPBACK = ("127.0.0.1", "localhost", "::1", None)


@pytest.fixture(autouse=True)
def no_outbound_lookups(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Fail the test if anything in it looked up a host name other than this machine's: an exporter that cannot
    resolve its collector (as here, with no network) never gets as far as connecting."""
    lookups: list[Any] = []
    getaddrinfo = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in _LOOPBACK:
            lookups.append(name)
            raise socket.gaierror(f"test guard: no lookups of other machines ({name})")
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    yield lookups
    assert not lookups, f"tried to look up another machine: {lookups}"


def tool_call(name: str, **arguments: Any) -> str:
    """A Hermes-style tool call, which the engine parses into an OpenAI tool call."""
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def final(answer: str) -> str:
    return f"Thought: I know the final answer.\nFinal Answer: {answer}"


def script(prompt: str) -> str:
    """The scripted model. It reads the system message (the agent's role, as CrewAI writes it: ``You are
    <role>.``), the task's numbers and the last turn:

    - writer: ``The answer is N.`` (the sum of the task's two numbers);
    - checker: ``APPROVE``;
    - solver: ``add`` with the task's two numbers, as a tool call when CrewAI offers tools natively (CrewAI
      1.1 and later) or as a ReAct ``Action`` when it describes them in the prompt (1.0); after the tool's
      result (a tool turn, or an ``Observation``), ``The answer is <result>.``
    """
    turns = re.findall(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>", prompt, re.DOTALL)
    system = turns[0][1] if turns and turns[0][0] == "system" else ""
    role, last = turns[-1] if turns else ("user", prompt)
    task = next((content for kind, content in turns if kind == "user"), prompt)
    numbers = (
        [int(n) for n in re.findall(r"Current Task: \D*(\d+)\D+(\d+)", task)[0]] if "Current Task" in task else [0, 0]
    )
    if "You are writer" in system:
        return final(f"The answer is {sum(numbers)}.")
    if "You are checker" in system:
        return final("APPROVE")
    result = re.search(r"Observation:\s*(\d+)", last)
    if role == "tool" and last.strip().isdigit():
        return final(f"The answer is {last.strip()}.")
    if result is not None:
        return final(f"The answer is {result.group(1)}.")
    if "Action Input:" in system:  # ReAct: the tools are described in the prompt
        arguments = json.dumps({"a": numbers[0], "b": numbers[1]})
        return f"Thought: I should add the numbers.\nAction: add\nAction Input: {arguments}"
    return tool_call("add", a=numbers[0], b=numbers[1])


@pytest.fixture(scope="session")
def scripted_server() -> Iterator[EngineServer]:
    with serve_scripted(script) as server:
        yield server


@pytest.fixture
def gateway(scripted_server: EngineServer, store: agl.SqliteStore) -> Iterator[agl.Gateway]:
    with agl.Gateway(scripted_server.url, store) as gateway:
        yield gateway


@pytest.fixture
def listener() -> Iterator[LightningListener]:
    """CrewAI instrumented, for one test."""
    yield instrument()
    uninstrument()


# --- what the store holds ------------------------------------------------------------------------------------


def llm_calls(spans: list[agl.Span]) -> list[agl.Span]:
    """The package's spans of LLM calls (not the gateway's), in call order."""
    return [
        s
        for s in spans
        if s.attributes.get(semconv.GEN_AI_OPERATION_NAME) == semconv.GEN_AI_OPERATION_CHAT and not is_gateway(s)
    ]


def named(spans: list[agl.Span], prefix: str) -> list[agl.Span]:
    return [s for s in spans if s.name.startswith(prefix)]


def ancestors(spans: list[agl.Span], span: agl.Span) -> list[agl.Span]:
    ids = {s.span_id: s for s in spans}
    found: list[agl.Span] = []
    while span.parent_id in ids:
        span = ids[span.parent_id]
        found.append(span)
    return found


def assert_joined(spans: list[agl.Span], agents: list[str]) -> agl.Trajectory:
    """Every LLM call the package recorded was joined with exactly one gateway span: one transition per call, with
    the gateway's token ids and logprobs and the package's agent role, in call order."""
    calls, recorded = llm_calls(spans), [s for s in spans if is_gateway(s)]
    assert len(calls) == len(recorded) == len(agents), (len(calls), len(recorded))
    assert [s.attributes.get(semconv.GEN_AI_AGENT_NAME) for s in calls] == agents
    trajectory = agl.TraceToTrajectory().adapt(spans)
    assert [t.agent_name for t in trajectory.transitions] == agents
    gateway_ids = {s.span_id for s in recorded}
    for transition, call in zip(trajectory.transitions, calls, strict=True):
        assert transition.span_id in gateway_ids
        (gateway_span,) = [s for s in recorded if s.span_id == transition.span_id]
        assert gateway_span.parent_id == call.span_id  # nested under the call by its traceparent
        # and told whose call it is by the agent named in the request's x-agentlightning-caller header
        assert gateway_span.attributes.get(semconv.GEN_AI_AGENT_NAME) == transition.agent_name
        assert transition.prompt_token_ids and transition.completion_token_ids and transition.logprobs
        assert len(transition.logprobs) == len(transition.completion_token_ids)
    return trajectory
