"""CrewAI crews through the real CrewAI and a real gateway: the crew, its tasks, agents, LLM calls and tool uses
as spans; each LLM call named after its agent's role and joined with the gateway's token ids; rewards; concurrent
rollouts; failures."""

from __future__ import annotations

import json
from typing import Any

import pytest
from agentlightning_crewai import CREW_NAME, TASK_ID, LightningListener, crewai_llm
from conftest import ancestors, assert_joined, llm_calls, named, rollout_spans
from crewai import Agent, Crew, Task
from crewai.events.types.llm_events import LLMCallCompletedEvent
from crewai.tools import tool

import agentlightning as agl
from agentlightning import semconv


@tool("add")
def add(a: int, b: int) -> int:
    """Add two numbers."""
    agl.emit_reward(0.1)  # inside the tool: a child of the tool use's span
    return a + b


def solver_crew(llm: agl.LLM, task: str, **llm_kwargs: Any) -> Crew:
    solver = Agent(
        role="solver", goal="Add numbers.", backstory="You add.", llm=crewai_llm(llm, **llm_kwargs), tools=[add]
    )
    return Crew(
        name="arithmetic", agents=[solver], tasks=[Task(description=task, expected_output="a sum", agent=solver)]
    )


def writer_and_checker(llm: agl.LLM, task: str) -> Crew:
    writer = Agent(role="writer", goal="Write the answer.", backstory="You write.", llm=crewai_llm(llm))
    checker = Agent(role="checker", goal="Check the answer.", backstory="You check.", llm=crewai_llm(llm))
    return Crew(
        agents=[writer, checker],
        tasks=[
            Task(description=task, expected_output="the answer", agent=writer),
            Task(description="Check the answer to: " + task, expected_output="APPROVE or not", agent=checker),
        ],
    )


def test_a_crew_is_recorded_with_its_task_agent_llm_calls_tool_use_and_reward(
    listener: LightningListener, gateway: agl.Gateway, store: agl.SqliteStore
) -> None:
    @agl.rollout
    def solve(task: str, llm: agl.LLM) -> float:
        result = solver_crew(llm, task).kickoff()
        return 1.0 if "The answer is 5." in result.raw else 0.0

    trainer = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("scripted")})
    result = trainer.dev(solve, ["what is 2 plus 3"])
    assert result.succeeded == 1 and result.mean_reward == 1.0 and listener.errors == 0
    spans = rollout_spans(store, result.rollouts[0][0])

    # crew > task > agent > (LLM call, tool use, LLM call), all ended.
    (crew,) = named(spans, "crew arithmetic")
    assert crew.attributes[CREW_NAME] == "arithmetic"
    (task,) = named(spans, "task")
    assert task.parent_id == crew.span_id and task.attributes[TASK_ID]
    (agent,) = named(spans, "invoke_agent")
    assert agent.name == "invoke_agent solver" and agent.parent_id == task.span_id
    assert agent.attributes[semconv.GEN_AI_AGENT_NAME] == "solver"
    calls = llm_calls(spans)
    assert [c.name for c in calls] == ["chat scripted", "chat scripted"]
    assert all(c.parent_id == agent.span_id for c in calls)
    assert all(s.status.status_code != agl.StatusCode.ERROR for s in spans)
    # What was asked and answered.
    first, second = calls
    asked = json.loads(str(first.attributes[semconv.GEN_AI_INPUT_MESSAGES]))
    assert asked[0]["role"] == "system" and "what is 2 plus 3" in json.dumps(asked)
    (answer,) = json.loads(str(second.attributes[semconv.GEN_AI_OUTPUT_MESSAGES]))
    assert "The answer is 5." in answer["content"]
    if "usage" in LLMCallCompletedEvent.model_fields:  # CrewAI 1.0 reports no usage (the gateway's span has it)
        assert all(isinstance(c.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS], int) for c in calls)
    assert all(c.attributes[semconv.GEN_AI_REQUEST_MODEL] == "scripted" for c in calls)

    (tool_use,) = named(spans, "execute_tool add")
    assert json.loads(str(tool_use.attributes[semconv.GEN_AI_TOOL_CALL_ARGUMENTS])) == {"a": 2, "b": 3}
    assert tool_use.attributes[semconv.GEN_AI_TOOL_CALL_RESULT] == "5"
    assert tool_use.attributes[semconv.GEN_AI_AGENT_NAME] == "solver"
    assert agent in ancestors(spans, tool_use)
    assert len([s for s in spans if s.name == semconv.SPAN_REWARD and s.parent_id == tool_use.span_id]) == 1

    trajectory = assert_joined(spans, ["solver", "solver"])
    assert trajectory.final_reward == 1.0


def test_a_two_agent_crew_names_each_llm_call_after_its_agents_role(
    listener: LightningListener, gateway: agl.Gateway, store: agl.SqliteStore
) -> None:
    @agl.rollout
    def write(task: str, llm: agl.LLM) -> float:
        result = writer_and_checker(llm, task).kickoff()
        return 1.0 if "APPROVE" in result.raw and "The answer is 5." in result.tasks_output[0].raw else 0.0

    trainer = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("scripted")})
    result = trainer.dev(write, ["what is 2 plus 3"])
    assert result.succeeded == 1 and result.mean_reward == 1.0 and listener.errors == 0
    spans = rollout_spans(store, result.rollouts[0][0])

    tasks = named(spans, "task")
    agents = named(spans, "invoke_agent")
    assert [a.attributes[semconv.GEN_AI_AGENT_NAME] for a in agents] == ["writer", "checker"]
    assert [a.parent_id for a in agents] == [t.span_id for t in tasks]
    for call, agent in zip(llm_calls(spans), agents, strict=True):
        assert call.parent_id == agent.span_id

    assert_joined(spans, ["writer", "checker"])
    # Selective training: the checker is part of the environment.
    writer_only = agl.TraceToTrajectory(agents=["writer"]).adapt(spans)
    assert [t.agent_name for t in writer_only.transitions] == ["writer"]


def test_concurrent_crews_land_each_in_their_own_rollout(
    listener: LightningListener, gateway: agl.Gateway, store: agl.SqliteStore
) -> None:
    @agl.rollout
    def work(task: str, llm: agl.LLM) -> float:
        if task.startswith("team"):
            return 1.0 if "APPROVE" in writer_and_checker(llm, task).kickoff().raw else 0.0
        a, b = (int(n) for n in task.split()[2::2])
        return 1.0 if f"The answer is {a + b}." in solver_crew(llm, task).kickoff().raw else 0.0

    tasks = [f"what is {i} plus {i + 1}" for i in range(2)] + [f"team: {i} plus {i}" for i in range(2)]
    trainer = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("scripted")}, max_concurrency=4)
    result = trainer.dev(work, tasks)
    assert result.succeeded == len(tasks) and result.mean_reward == 1.0 and listener.errors == 0
    for rollout, _ in result.rollouts:
        spans = rollout_spans(store, rollout)
        team = str(rollout.input).startswith("team")
        assert_joined(spans, ["writer", "checker"] if team else ["solver", "solver"])
        (first, *_) = llm_calls(spans)  # only this rollout's own task reached its LLM calls
        assert str(rollout.input) in str(first.attributes[semconv.GEN_AI_INPUT_MESSAGES])
        if not team:
            (tool_use,) = named(spans, "execute_tool add")
            a, b = (int(n) for n in str(rollout.input).split()[2::2])
            assert json.loads(str(tool_use.attributes[semconv.GEN_AI_TOOL_CALL_ARGUMENTS])) == {"a": a, "b": b}


def test_a_failed_llm_call_is_recorded_as_failed_with_its_agent(
    listener: LightningListener, gateway: agl.Gateway, store: agl.SqliteStore
) -> None:
    @agl.rollout
    def work(task: str, llm: agl.LLM) -> float:
        nowhere = llm.model_copy(update={"base_url": "http://127.0.0.1:9/v1"})  # nothing listens there
        try:
            solver_crew(nowhere, task, max_retries=0).kickoff()
        except Exception:
            return 1.0
        return 0.0

    result = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("scripted")}).dev(work, ["2 plus 3"])
    assert result.mean_reward == 1.0 and listener.errors == 0
    spans = rollout_spans(store, result.rollouts[0][0])
    calls = llm_calls(spans)
    assert calls and all(c.status.status_code == agl.StatusCode.ERROR for c in calls)
    assert all(c.attributes[semconv.GEN_AI_AGENT_NAME] == "solver" for c in calls)
    # Everything that started has ended, the crew as failed.
    (crew,) = named(spans, "crew")
    assert crew.status.status_code == agl.StatusCode.ERROR


def test_a_failure_inside_the_listener_is_counted_and_the_run_goes_on(
    listener: LightningListener, gateway: agl.Gateway, store: agl.SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agentlightning_crewai.listener as module

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(module, "begin_span", broken)

    @agl.rollout
    def solve(task: str, llm: agl.LLM) -> float:
        return 1.0 if "The answer is 5." in solver_crew(llm, task).kickoff().raw else 0.0

    result = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("scripted")}).dev(solve, ["2 plus 3"])
    assert result.succeeded == 1 and result.mean_reward == 1.0
    assert listener.errors >= 6  # the crew, task, agent, two LLM calls and the tool use
