"""Fixtures: a scripted engine that plays AutoGen agents (a solver with a tool, a writer and a checker, a triage agent
handing off, a team's selector) behind a real gateway on 127.0.0.1, a SQLite store per test, the package
instrumented, and a guard that fails any test whose process tries to reach another machine."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Nothing may leave this machine, even with a key set.
os.environ["OPENAI_API_KEY"] = "sk-test-never-sent"

from agentlightning_autogen import LightningRecorder, instrument, uninstrument
from agentlightning_engine import EngineServer
from agentlightning_engine.testing import serve_scripted

import agentlightning as agl
from agentlightning import semconv
from agentlightning.testing import is_gateway as is_gateway
from agentlightning.testing import no_outbound_connections as no_outbound_connections  # autouse
from agentlightning.testing import rollout_spans as rollout_spans
from agentlightning.testing import store as store  # the fixture


def tool_call(name: str, **arguments: Any) -> str:
    """A Hermes-style tool call, which the engine parses into an OpenAI tool call."""
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def script(prompt: str) -> str:
    """The scripted model. It reads the system message (the agent's instructions), the first user turn (the task)
    and the last turn:

    - a team's selector (its prompt asks to "select the next role"): ``math`` until someone has answered, then
      ``checker``;
    - triage: hands off to math (``transfer_to_math``);
    - writer: ``The answer is N.`` (the sum of the task's two numbers), no tools;
    - checker: ``APPROVE``;
    - solver and math: ``add`` with the task's two numbers; after its result, ``The answer is <result>.``
    """
    if "select the next role" in prompt:
        return "checker" if "The answer is" in prompt else "math"
    turns = re.findall(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>", prompt, re.DOTALL)
    system = turns[0][1] if turns and turns[0][0] == "system" else ""
    role, last = turns[-1] if turns else ("user", prompt)
    task = next((content for kind, content in turns if kind == "user"), prompt)
    numbers = [int(n) for n in re.findall(r"\d+", task)][:2] or [0, 0]
    if "You are triage" in system:
        return tool_call("transfer_to_math")
    if "You are writer" in system:
        return f"The answer is {sum(numbers)}."
    if "You are checker" in system:
        return "APPROVE"
    if role == "tool" and last.strip().isdigit():
        return f"The answer is {last.strip()}."
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
def recorder() -> Iterator[LightningRecorder]:
    """AutoGen instrumented, for one test."""
    yield instrument()
    uninstrument()


# --- what the store holds ------------------------------------------------------------------------------------


def model_calls(spans: list[agl.Span]) -> list[agl.Span]:
    """The package's spans of model calls (not the gateway's), in call order."""
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
    """Every model call the package recorded was joined with exactly one gateway span: one transition per call,
    with the gateway's token ids and logprobs and the package's agent name, in call order."""
    calls, recorded = model_calls(spans), [s for s in spans if is_gateway(s)]
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
