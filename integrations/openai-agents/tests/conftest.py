"""Fixtures: a scripted engine that plays a triage agent and its specialists (tool calls and handoffs included)
behind a real gateway on 127.0.0.1, a SQLite store per test, the processor installed, and a guard that fails any
test whose process tries to reach another machine."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest

# Nothing leaves this machine, even with a key set: the SDK's exporter would use it, instrument() removes it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["OPENAI_API_KEY"] = "sk-test-never-sent"

from agentlightning_engine import EngineServer
from agentlightning_engine.testing import serve_scripted
from agentlightning_openai_agents import LightningTracingProcessor, instrument, uninstrument

import agentlightning as agl
from agentlightning.testing import is_gateway as is_gateway
from agentlightning.testing import no_outbound_connections as no_outbound_connections  # autouse
from agentlightning.testing import rollout_spans as rollout_spans
from agentlightning.testing import store as store  # the fixture


def tool_call(name: str, **arguments: Any) -> str:
    """A Hermes-style tool call, which the engine parses into an OpenAI tool call."""
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def script(prompt: str) -> str:
    """The scripted model. It reads the system message (the agent's instructions) and the last turn:

    - triage: ``... plus ...`` -> hand off to math, anything else -> hand off to units;
    - math: after the hand-off -> two ``add`` calls at once (parallel tool calls); after their results -> the sum
      of the results as ``The answer is N.``;
    - units: after the hand-off -> ``convert``; after its result -> ``The answer is <result>.``
    """
    turns = re.findall(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>", prompt, re.DOTALL)
    system = turns[0][1] if turns and turns[0][0] == "system" else ""
    role, last = turns[-1] if turns else ("user", prompt)
    handed_off = role == "tool" and '"assistant"' in last
    if "You are triage" in system:
        return tool_call("transfer_to_math") if "plus" in last else tool_call("transfer_to_units")
    if "You are math" in system:
        if handed_off:
            numbers = [int(n) for n in re.findall(r"\d+", prompt.split("<|im_start|>user")[-1])][:2] or [0, 0]
            return tool_call("add", a=numbers[0], b=numbers[1]) + tool_call("add", a=0, b=0)
        results = [int(n) for n in re.findall(r"<\|im_start\|>tool\n(\d+)", prompt)]
        return f"The answer is {sum(results)}."
    if "You are units" in system:
        if handed_off:
            return tool_call("convert", value=1, unit="km")
        results = re.findall(r"<\|im_start\|>tool\n([^<]*)<\|im_end\|>", prompt)
        return f"The answer is {results[-1].strip() if results else '?'}."
    return "Hello."


@pytest.fixture(scope="session")
def scripted_server() -> Iterator[EngineServer]:
    with serve_scripted(script) as server:
        yield server


@pytest.fixture
def gateway(scripted_server: EngineServer, store: agl.SqliteStore) -> Iterator[agl.Gateway]:
    with agl.Gateway(scripted_server.url, store) as gateway:
        yield gateway


@pytest.fixture
def processor() -> Iterator[LightningTracingProcessor]:
    """The processor in place of the SDK's own (its exporter to OpenAI included), for one test."""
    yield instrument()
    uninstrument()


# --- what the store holds ------------------------------------------------------------------------------------


def by_type(spans: list[agl.Span], kind: str) -> list[agl.Span]:
    return [s for s in spans if s.attributes.get("openai_agents.span.type") == kind]


def parent(spans: list[agl.Span], span: agl.Span) -> agl.Span:
    (found,) = [s for s in spans if s.span_id == span.parent_id]
    return found


def assert_joined(spans: list[agl.Span], agents: list[str]) -> agl.Trajectory:
    """Every generation the processor recorded was joined with exactly one gateway span: one transition per call,
    with the gateway's token ids and logprobs and the processor's agent name, in call order."""
    generations, recorded = by_type(spans, "generation"), [s for s in spans if is_gateway(s)]
    assert len(generations) == len(recorded) == len(agents), (len(generations), len(recorded))
    trajectory = agl.TraceToTrajectory().adapt(spans)
    assert [t.agent_name for t in trajectory.transitions] == agents
    gateway_ids = {s.span_id for s in recorded}
    for transition in trajectory.transitions:
        assert transition.span_id in gateway_ids
        assert transition.prompt_token_ids and transition.completion_token_ids and transition.logprobs
        assert len(transition.logprobs) == len(transition.completion_token_ids)
    return trajectory
