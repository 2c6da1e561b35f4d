"""Fixtures: a real engine (tiny random model, and a scripted one that says tool calls) behind a real gateway on
127.0.0.1, a SQLite store per test, and helpers to read the spans a rollout left."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
from collections.abc import Iterator
from typing import Any

import langchain.agents.factory
import pytest

# Nothing leaves this machine: no LangSmith tracing, no model hub.
for _var in ("LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING", "LANGSMITH_TRACING", "LANGSMITH_TRACING_V2"):
    os.environ[_var] = "false"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agentlightning_engine import EngineServer, TransformersEngine  # noqa: E402
from agentlightning_engine.testing import save_tiny_model, serve_scripted  # noqa: E402
from langchain_openai import ChatOpenAI  # noqa: E402

import agentlightning as agl  # noqa: E402
from agentlightning import semconv  # noqa: E402
from agentlightning.testing import no_outbound_connections as no_outbound_connections  # noqa: E402  (autouse)
from agentlightning.testing import store as store  # noqa: E402  (the fixture)

# langchain records create_agent(name=...) in the runs' metadata (lc_agent_name) since 1.2; with older versions
# a create_agent's calls are named by the next source (metadata, then the LangGraph node).
AGENT_NAMES = "lc_agent_name" in inspect.getsource(langchain.agents.factory)


def tool_call(name: str, **arguments: Any) -> str:
    """A Hermes-style tool call, which the engine parses into an OpenAI tool call."""
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def script(prompt: str) -> str:
    """The scripted model. It reads the last turn of the prompt (SmolLM2's chat template) and says:

    - ``weather in A and B`` -> one tool call ``get_weather`` per city (parallel tool calls);
    - tool results ``sunny in A`` ... -> ``Sunny in A, B.``;
    - ``write SQL for: X`` -> ``SELECT X FROM t``; ``check: Q`` -> ``OK``;
    - ``break the tool`` -> a call to the ``broken`` tool; anything else -> ``Hello.``.
    """
    turns = re.findall(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>", prompt, re.DOTALL)
    role, last = turns[-1] if turns else ("user", prompt)
    if role == "tool" or "<tool_response>" in last or (role == "user" and "sunny in" in last):
        cities = re.findall(r"sunny in (\w+)", prompt)
        return f"Sunny in {', '.join(dict.fromkeys(cities))}."
    if match := re.search(r"weather in ([\w ,]+)", last):
        cities = [c for c in re.split(r",\s*|\s+and\s+", match.group(1).strip()) if c]
        return "".join(tool_call("get_weather", city=city) for city in cities)
    if match := re.search(r"write SQL for: (\w+)", last):
        return f"SELECT {match.group(1)} FROM t"
    if "check:" in last:
        return "OK"
    if "break the tool" in last:
        return tool_call("broken", x=1)
    return "Hello."


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TransformersEngine]:
    with TransformersEngine(save_tiny_model(tmp_path_factory.mktemp("tiny")), served_model_name="tiny") as engine:
        yield engine


@pytest.fixture(scope="session")
def tiny_server(engine: TransformersEngine) -> Iterator[EngineServer]:
    with engine.serve(port=0) as server:
        yield server


@pytest.fixture(scope="session")
def scripted_server(engine: TransformersEngine) -> Iterator[EngineServer]:
    with serve_scripted(script, tokenizer=engine.tokenizer) as server:
        yield server


@pytest.fixture
def gateway(scripted_server: EngineServer, store: agl.SqliteStore) -> Iterator[agl.Gateway]:
    """The gateway in front of the scripted engine."""
    with agl.Gateway(scripted_server.url, store) as gateway:
        yield gateway


@pytest.fixture
def tiny_gateway(tiny_server: EngineServer, store: agl.SqliteStore) -> Iterator[agl.Gateway]:
    """The gateway in front of the tiny random model."""
    with agl.Gateway(tiny_server.url, store) as gateway:
        yield gateway


def chat_model(llm: agl.LLM, **params: Any) -> ChatOpenAI:
    """LangChain's OpenAI chat model, pointed at the rollout's gateway URL."""
    return ChatOpenAI(
        model=llm.model,
        base_url=llm.base_url,
        api_key="unused",  # type: ignore[arg-type]
        max_retries=0,
        temperature=0,
        **params,
    )


# --- what the store holds ------------------------------------------------------------------------------------


def rollout_spans(store: agl.SqliteStore, rollout: agl.Rollout) -> list[agl.Span]:
    """The spans of the rollout's only attempt, in sequence order."""
    spans = asyncio.run(store.query_spans(rollout.rollout_id))
    assert len({s.attempt_id for s in spans}) == 1
    return sorted(spans, key=lambda s: s.sequence_id or 0)


def is_gateway(span: agl.Span) -> bool:
    return span.attributes.get(semconv.AGL_LLM_GATEWAY) is True


def handler_calls(spans: list[agl.Span]) -> list[agl.Span]:
    """The handler's LLM-call spans, by start time."""
    calls = [
        s
        for s in spans
        if s.attributes.get(semconv.GEN_AI_OPERATION_NAME) in ("chat", "text_completion") and not is_gateway(s)
    ]
    return sorted(calls, key=lambda s: s.start_time)


def gateway_calls(spans: list[agl.Span]) -> list[agl.Span]:
    return sorted([s for s in spans if is_gateway(s)], key=lambda s: s.start_time)


def by_name(spans: list[agl.Span], name: str) -> list[agl.Span]:
    return [s for s in spans if s.name == name]


def parent(spans: list[agl.Span], span: agl.Span) -> agl.Span:
    (found,) = [s for s in spans if s.span_id == span.parent_id]
    return found


def ancestors(spans: list[agl.Span], span: agl.Span) -> list[str]:
    """The names of the span's ancestors, nearest first."""
    index = {s.span_id: s for s in spans}
    names = []
    while span.parent_id in index:
        span = index[span.parent_id]
        names.append(span.name)
    return names


def assert_joined(spans: list[agl.Span], agents: list[str | None]) -> agl.Trajectory:
    """Every LLM call the handler recorded was joined with exactly one gateway span: the adapter gives one
    transition per call, with the gateway's token ids and logprobs and the handler's agent name."""
    calls, recorded = handler_calls(spans), gateway_calls(spans)
    assert len(calls) == len(recorded) == len(agents), (len(calls), len(recorded))
    trajectory = agl.TraceToTrajectory().adapt(spans)
    assert len(trajectory.transitions) == len(agents)
    by_span = {s.span_id: s for s in recorded}
    assert set(by_span) == {t.span_id for t in trajectory.transitions}  # read from the gateway's spans
    for transition in trajectory.transitions:
        gateway_span = by_span[transition.span_id]
        assert transition.completion_token_ids == gateway_span.attributes[semconv.AGL_COMPLETION_TOKEN_IDS]
        assert transition.prompt_token_ids and transition.logprobs
        assert len(transition.logprobs) == len(transition.completion_token_ids)
        # The gateway span names the handler's call that made it.
        caller = gateway_span.attributes.get(semconv.AGL_CALLER_TRACEPARENT)
        assert isinstance(caller, str) and caller.split("-")[2] in {c.span_id for c in calls}
    assert sorted(map(str, (t.agent_name for t in trajectory.transitions))) == sorted(map(str, agents))
    return trajectory


def tree(spans: list[agl.Span]) -> str:
    """The span tree as indented names (for failure messages)."""
    children: dict[str | None, list[agl.Span]] = {}
    ids = {s.span_id for s in spans}
    for s in spans:
        children.setdefault(s.parent_id if s.parent_id in ids else None, []).append(s)
    lines: list[str] = []

    def walk(parent_id: str | None, depth: int) -> None:
        for s in children.get(parent_id, []):
            lines.append("  " * depth + s.name)
            walk(s.span_id, depth + 1)

    walk(None, 0)
    return "\n".join(lines)
