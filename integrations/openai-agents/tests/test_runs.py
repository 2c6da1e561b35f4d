"""A triage agent handing off to specialists with function tools, through the real SDK and a real gateway: the
span tree, agent names after hand-offs, token ids joined from the gateway, rewards, parallel tool calls,
concurrent and streamed runs."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from agentlightning_openai_agents import (
    GUARDRAIL_TRIGGERED,
    HANDOFF_FROM,
    HANDOFF_TO,
    LightningTracingProcessor,
    chat_completions_model,
)
from agents import (
    Agent,
    GuardrailFunctionOutput,
    RunConfig,
    Runner,
    function_tool,
    input_guardrail,
)
from conftest import assert_joined, by_type, is_gateway, rollout_spans

import agentlightning as agl
from agentlightning import semconv


@function_tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    agl.emit_reward(0.1)  # inside the tool: a child of the tool's span
    return a + b


@function_tool
def convert(value: float, unit: str) -> str:
    """Convert a value to metres."""
    return f"{value * 1000:g} m" if unit == "km" else "unknown unit"


@input_guardrail
def on_topic(context: Any, agent: Agent[Any], text: Any) -> GuardrailFunctionOutput:
    return GuardrailFunctionOutput(output_info=None, tripwire_triggered=False)


def triage_agent(llm: agl.LLM) -> Agent[Any]:
    model = chat_completions_model(llm)
    math = Agent(name="math", instructions="You are math.", tools=[add], model=model)
    units = Agent(name="units", instructions="You are units.", tools=[convert], model=model)
    return Agent(
        name="triage",
        instructions="You are triage.",
        handoffs=[math, units],
        input_guardrails=[on_topic],
        model=model,
    )


def expected_answer(question: str) -> str:
    if "plus" in question:
        a, b = [int(word) for word in question.split() if word.isdigit()]
        return f"The answer is {a + b}."
    return "The answer is 1000 m."


@pytest.mark.parametrize("mode", ["async", "sync", "streamed"])
def test_a_triage_run_is_recorded_with_agents_handoffs_tools_and_rewards(
    processor: LightningTracingProcessor, gateway: agl.Gateway, store: agl.SqliteStore, mode: str
) -> None:
    @agl.rollout
    async def triage(task: str, llm: agl.LLM) -> float:
        agent = triage_agent(llm)
        if mode == "sync":
            result: Any = await asyncio.to_thread(Runner.run_sync, agent, task)
        elif mode == "streamed":
            result = Runner.run_streamed(agent, task)
            async for _ in result.stream_events():
                pass
        else:
            result = await Runner.run(agent, task)
        return 1.0 if result.final_output == expected_answer(task) else 0.0

    trainer = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("scripted")})
    result = trainer.dev(triage, ["what is 2 plus 3"])
    assert result.succeeded == 1 and result.mean_reward == 1.0 and processor.errors == 0
    spans = rollout_spans(store, result.rollouts[0][0])

    (workflow,) = by_type(spans, "trace")
    assert workflow.name == "workflow Agent workflow"
    agents = by_type(spans, "agent")
    assert [s.attributes[semconv.GEN_AI_AGENT_NAME] for s in agents] == ["triage", "math"]
    (handoff,) = by_type(spans, "handoff")
    assert (handoff.attributes[HANDOFF_FROM], handoff.attributes[HANDOFF_TO]) == ("triage", "math")
    (guardrail,) = by_type(spans, "guardrail")
    assert guardrail.attributes[GUARDRAIL_TRIGGERED] is False

    # The math agent called add twice at once; each call is a span with its arguments and result, and the
    # reward emitted inside each is that span's child.
    tools = by_type(spans, "function")
    assert sorted(json.loads(str(s.attributes[semconv.GEN_AI_TOOL_CALL_ARGUMENTS]))["a"] for s in tools) == [0, 2]
    assert sorted(str(s.attributes[semconv.GEN_AI_TOOL_CALL_RESULT]) for s in tools) == ["0", "5"]
    assert all(s.attributes[semconv.GEN_AI_AGENT_NAME] == "math" for s in tools)
    assert tools[0].start_time < tools[1].end_time and tools[1].start_time < tools[0].end_time  # concurrent
    rewards = [s for s in spans if s.name == semconv.SPAN_REWARD]
    for tool in tools:
        assert len([r for r in rewards if r.parent_id == tool.span_id]) == 1
    # Every span of the run descends from the workflow's span, itself under the rollout's root.
    ids = {s.span_id: s for s in spans}
    for span in spans:
        if span is workflow or span.parent_id not in ids or span.name == semconv.SPAN_REWARD:
            continue
        node = span
        while node.parent_id in ids and node is not workflow:
            node = ids[node.parent_id]
        assert node is workflow or is_gateway(span), span.name

    # Three LLM calls: triage's (the hand-off), math's two (the tool calls, then the answer); each one is joined
    # with the gateway's span of it, which has the token ids, and named after the agent that made it.
    trajectory = assert_joined(spans, ["triage", "math", "math"])
    assert trajectory.final_reward == 1.0
    math_only = agl.TraceToTrajectory(agents=["math"]).adapt(spans)
    assert [t.agent_name for t in math_only.transitions] == ["math", "math"]
    assert math_only.transitions[0].output_messages[0]["tool_calls"]  # type: ignore[index]


def test_concurrent_runs_land_each_in_its_own_rollout(
    processor: LightningTracingProcessor, gateway: agl.Gateway, store: agl.SqliteStore
) -> None:
    @agl.rollout
    async def triage(task: str, llm: agl.LLM) -> float:
        result = await Runner.run(triage_agent(llm), task)
        return 1.0 if result.final_output == expected_answer(task) else 0.0

    tasks = [f"what is {i} plus {i + 1}" for i in range(6)] + ["convert 1 km", "convert it"]
    trainer = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("scripted")}, max_concurrency=8)
    result = trainer.dev(triage, tasks)
    assert result.succeeded == len(tasks) and result.mean_reward == 1.0 and processor.errors == 0
    for rollout, _ in result.rollouts:
        spans = rollout_spans(store, rollout)
        specialist = "math" if "plus" in str(rollout.input) else "units"
        assert_joined(spans, ["triage", specialist, specialist])
        # Only this run's own question reached its model calls.
        (first, *_) = [s for s in spans if is_gateway(s)]
        assert str(rollout.input) in str(first.attributes[semconv.GEN_AI_INPUT_MESSAGES])


def test_without_sensitive_data_the_spans_lose_messages_but_training_keeps_them(
    processor: LightningTracingProcessor, gateway: agl.Gateway, store: agl.SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    @agl.rollout
    async def triage(task: str, llm: agl.LLM) -> float:
        await Runner.run(triage_agent(llm), task, run_config=RunConfig(trace_include_sensitive_data=False))
        return 1.0

    trainer = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("scripted")})
    result = trainer.dev(triage, ["convert 1 km"])
    spans = rollout_spans(store, result.rollouts[0][0])
    assert all(semconv.GEN_AI_INPUT_MESSAGES not in s.attributes for s in by_type(spans, "generation"))
    assert "trace_include_sensitive_data is off" in caplog.text
    trajectory = assert_joined(spans, ["triage", "units", "units"])
    assert trajectory.transitions[0].input_messages  # from the gateway


def test_a_failure_inside_the_processor_is_counted_and_the_run_goes_on(
    processor: LightningTracingProcessor,
    gateway: agl.Gateway,
    store: agl.SqliteStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import agentlightning_openai_agents.processor as module

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(module, "begin_span", broken)

    @agl.rollout
    async def triage(task: str, llm: agl.LLM) -> float:
        result = await Runner.run(triage_agent(llm), task)
        return 1.0 if result.final_output == expected_answer(task) else 0.0

    result = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("scripted")}).dev(triage, ["convert 1 km"])
    assert result.succeeded == 1 and result.mean_reward == 1.0
    assert processor.errors > 0
