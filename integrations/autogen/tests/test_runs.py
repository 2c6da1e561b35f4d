"""AutoGen agents and teams through the real AgentChat and a real gateway: the model calls named after their
agents, joined with the gateway's token ids, tool calls with their rewards, team runs, concurrent rollouts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from agentlightning_autogen import TEAM_PARTICIPANTS, TEAM_STOP_REASON, LightningRecorder, chat_completion_client
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.conditions import TextMentionTermination
from autogen_agentchat.messages import TextMessage
from autogen_agentchat.teams import RoundRobinGroupChat, SelectorGroupChat, Swarm
from autogen_core import CancellationToken, trace_invoke_agent_span
from conftest import ancestors, assert_joined, model_calls, named, rollout_spans
from openai import APIConnectionError

import agentlightning as agl
from agentlightning import semconv


def add(a: int, b: int) -> int:
    """Add two numbers."""
    agl.emit_reward(0.1)  # inside the tool: a child of the tool call's span
    return a + b


def solver(llm: agl.LLM, stream: bool = False) -> AssistantAgent:
    return AssistantAgent(
        "solver",
        model_client=chat_completion_client(llm),
        tools=[add],
        system_message="You are solver.",
        reflect_on_tool_use=True,
        model_client_stream=stream,
    )


@pytest.mark.parametrize("mode", ["run", "run_stream", "streamed_model"])
def test_a_standalone_agent_is_recorded_with_its_model_calls_tool_call_and_reward(
    recorder: LightningRecorder, gateway: agl.Gateway, store: agl.SqliteStore, mode: str
) -> None:
    @agl.rollout
    async def solve(task: str, llm: agl.LLM) -> float:
        agent = solver(llm, stream=mode == "streamed_model")
        if mode == "run_stream":
            result: Any = None
            async for item in agent.run_stream(task=task):
                if isinstance(item, TaskResult):
                    result = item
        else:
            result = await agent.run(task=task)
        return 1.0 if result.messages[-1].to_text() == "The answer is 5." else 0.0

    trainer = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("scripted")})
    result = trainer.dev(solve, ["what is 2 plus 3"])
    assert result.succeeded == 1 and result.mean_reward == 1.0 and recorder.errors == 0
    spans = rollout_spans(store, result.rollouts[0][0])

    # AutoGen's own span of the agent's run; the model calls and the tool call inside it.
    (invocation,) = named(spans, "invoke_agent")
    assert invocation.attributes[semconv.GEN_AI_AGENT_NAME] == "solver"
    calls = model_calls(spans)
    assert [c.name for c in calls] == ["chat scripted", "chat scripted"]
    assert all(invocation in ancestors(spans, c) for c in calls)
    # What was asked and answered, in OpenAI's chat format: the tool offered, the tool call, its result.
    (offered,) = json.loads(str(calls[0].attributes[semconv.GEN_AI_TOOL_DEFINITIONS]))
    assert offered["function"]["name"] == "add" and offered["function"]["parameters"]["required"] == ["a", "b"]
    (request,) = json.loads(str(calls[0].attributes[semconv.GEN_AI_OUTPUT_MESSAGES]))
    (call,) = request["tool_calls"]
    assert call["function"] == {"name": "add", "arguments": '{"a": 2, "b": 3}'}
    *_, asked, answered = json.loads(str(calls[1].attributes[semconv.GEN_AI_INPUT_MESSAGES]))
    assert asked["tool_calls"] == [call] and answered == {"role": "tool", "tool_call_id": call["id"], "content": "5"}
    assert all(isinstance(c.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS], int) for c in calls)
    (tool,) = named(spans, "execute_tool")
    assert json.loads(str(tool.attributes[semconv.GEN_AI_TOOL_CALL_ARGUMENTS])) == {"a": 2, "b": 3}
    assert tool.attributes[semconv.GEN_AI_TOOL_CALL_RESULT] == "5"
    assert tool.attributes[semconv.GEN_AI_AGENT_NAME] == "solver"
    assert invocation in ancestors(spans, tool)
    assert len([s for s in spans if s.name == semconv.SPAN_REWARD and s.parent_id == tool.span_id]) == 1

    trajectory = assert_joined(spans, ["solver", "solver"])
    assert trajectory.final_reward == 1.0


def test_an_agent_called_directly_is_named_inside_autogens_invoke_agent_span(
    recorder: LightningRecorder, gateway: agl.Gateway, store: agl.SqliteStore
) -> None:
    # on_messages is below AutoGen's invoke_agent span (run, run_stream and team turns open it); code that calls
    # it directly opens the span itself, with AutoGen's public helper.
    @agl.rollout
    async def solve(task: str, llm: agl.LLM) -> float:
        agent = solver(llm)
        with trace_invoke_agent_span(agent.name):
            response = await agent.on_messages([TextMessage(content=task, source="user")], CancellationToken())
        return 1.0 if response.chat_message.to_text() == "The answer is 5." else 0.0

    result = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("scripted")}).dev(solve, ["2 plus 3"])
    assert result.succeeded == 1 and result.mean_reward == 1.0 and recorder.errors == 0
    assert_joined(rollout_spans(store, result.rollouts[0][0]), ["solver", "solver"])


def writer_and_checker(llm: agl.LLM) -> RoundRobinGroupChat:
    writer = AssistantAgent("writer", model_client=chat_completion_client(llm), system_message="You are writer.")
    checker = AssistantAgent("checker", model_client=chat_completion_client(llm), system_message="You are checker.")
    return RoundRobinGroupChat([writer, checker], termination_condition=TextMentionTermination("APPROVE"))


def test_a_round_robin_team_names_each_model_call_after_the_agent_that_made_it(
    recorder: LightningRecorder, gateway: agl.Gateway, store: agl.SqliteStore
) -> None:
    @agl.rollout
    async def write(task: str, llm: agl.LLM) -> float:
        result = await writer_and_checker(llm).run(task=task)
        return 1.0 if [m.source for m in result.messages] == ["user", "writer", "checker"] else 0.0

    trainer = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("scripted")})
    result = trainer.dev(write, ["what is 2 plus 3"])
    assert result.succeeded == 1 and result.mean_reward == 1.0 and recorder.errors == 0
    spans = rollout_spans(store, result.rollouts[0][0])

    # The team's run, and each agent's turn in it (AutoGen's invoke_agent span) below it.
    (team,) = named(spans, "team RoundRobinGroupChat")
    assert team.attributes[TEAM_PARTICIPANTS] == ["writer", "checker"]
    assert "APPROVE" in str(team.attributes[TEAM_STOP_REASON])
    turns = named(spans, "invoke_agent")
    assert [t.attributes[semconv.GEN_AI_AGENT_NAME] for t in turns] == ["writer", "checker"]
    assert all(team in ancestors(spans, t) for t in turns)
    for call, turn in zip(model_calls(spans), turns, strict=True):
        assert turn in ancestors(spans, call)

    assert_joined(spans, ["writer", "checker"])
    # Selective training: the checker is part of the environment.
    writer_only = agl.TraceToTrajectory(agents=["writer"]).adapt(spans)
    assert [t.agent_name for t in writer_only.transitions] == ["writer"]
    (answer,) = writer_only.transitions[0].output_messages
    assert isinstance(answer, dict) and answer["content"] == "The answer is 5."


def test_a_selector_group_chat_names_the_selectors_calls_after_the_teams_manager(
    recorder: LightningRecorder, gateway: agl.Gateway, store: agl.SqliteStore
) -> None:
    @agl.rollout
    async def select(task: str, llm: agl.LLM) -> float:
        client = chat_completion_client(llm)
        math = AssistantAgent(
            "math", model_client=client, tools=[add], system_message="You are math.", reflect_on_tool_use=True
        )
        checker = AssistantAgent("checker", model_client=client, system_message="You are checker.")
        team = SelectorGroupChat(
            [math, checker], model_client=client, termination_condition=TextMentionTermination("APPROVE")
        )
        result = await team.run(task=task)
        return 1.0 if [m.source for m in result.messages][-2:] == ["math", "checker"] else 0.0

    trainer = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("scripted")})
    result = trainer.dev(select, ["what is 2 plus 3"])
    assert result.succeeded == 1 and result.mean_reward == 1.0 and recorder.errors == 0
    spans = rollout_spans(store, result.rollouts[0][0])

    # The selector asks the model who speaks first (only the checker can follow math: no second question);
    # math calls add, then answers from its result; the checker approves.
    assert_joined(spans, ["SelectorGroupChatManager", "math", "math", "checker"])
    (tool,) = named(spans, "execute_tool add")
    assert tool.attributes[semconv.GEN_AI_AGENT_NAME] == "math"
    assert len([s for s in spans if s.name == semconv.SPAN_REWARD and s.parent_id == tool.span_id]) == 1
    math_only = agl.TraceToTrajectory(agents=["math"]).adapt(spans)
    assert [t.agent_name for t in math_only.transitions] == ["math", "math"]
    (request,) = math_only.transitions[0].output_messages
    assert isinstance(request, dict) and request["tool_calls"]


def test_a_swarm_names_each_model_call_after_the_agent_handed_to(
    recorder: LightningRecorder, gateway: agl.Gateway, store: agl.SqliteStore
) -> None:
    @agl.rollout
    async def triage(task: str, llm: agl.LLM) -> float:
        client = chat_completion_client(llm)
        triage = AssistantAgent("triage", model_client=client, handoffs=["math"], system_message="You are triage.")
        math = AssistantAgent(
            "math", model_client=client, tools=[add], system_message="You are math.", reflect_on_tool_use=True
        )
        team = Swarm([triage, math], termination_condition=TextMentionTermination("The answer is"))
        result = await team.run(task=task)
        return 1.0 if result.messages[-1].to_text() == "The answer is 5." else 0.0

    trainer = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("scripted")})
    result = trainer.dev(triage, ["what is 2 plus 3"])
    assert result.succeeded == 1 and result.mean_reward == 1.0 and recorder.errors == 0
    spans = rollout_spans(store, result.rollouts[0][0])

    (team,) = named(spans, "team Swarm")
    assert team.attributes[TEAM_PARTICIPANTS] == ["triage", "math"]
    # The hand-off is a tool call of triage's.
    (handoff,) = named(spans, "execute_tool transfer_to_math")
    assert handoff.attributes[semconv.GEN_AI_AGENT_NAME] == "triage"
    assert_joined(spans, ["triage", "math", "math"])


def test_concurrent_runs_land_each_in_its_own_rollout(
    recorder: LightningRecorder, gateway: agl.Gateway, store: agl.SqliteStore
) -> None:
    @agl.rollout
    async def work(task: str, llm: agl.LLM) -> float:
        if "team" in task:
            result = await writer_and_checker(llm).run(task=task)
            return 1.0 if result.messages[-1].to_text() == "APPROVE" else 0.0
        result = await solver(llm).run(task=task)
        return 1.0 if result.messages[-1].to_text() == f"The answer is {sum(map(int, task.split()[2::2]))}." else 0.0

    tasks = [f"what is {i} plus {i + 1}" for i in range(4)] + [f"team: {i} plus {i}" for i in range(4)]
    trainer = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("scripted")}, max_concurrency=8)
    result = trainer.dev(work, tasks)
    assert result.succeeded == len(tasks) and result.mean_reward == 1.0 and recorder.errors == 0
    for rollout, _ in result.rollouts:
        spans = rollout_spans(store, rollout)
        team = "team" in str(rollout.input)
        assert_joined(spans, ["writer", "checker"] if team else ["solver", "solver"])
        # Only this run's own task reached its model calls, and its tool calls are its own.
        (first, *_) = model_calls(spans)
        assert str(rollout.input) in str(first.attributes[semconv.GEN_AI_INPUT_MESSAGES])
        if not team:
            (tool,) = named(spans, "execute_tool add")
            a, b = (int(n) for n in str(rollout.input).split()[2::2])
            assert json.loads(str(tool.attributes[semconv.GEN_AI_TOOL_CALL_ARGUMENTS])) == {"a": a, "b": b}


def test_a_failure_inside_the_recorder_is_counted_and_the_run_goes_on(
    recorder: LightningRecorder, gateway: agl.Gateway, store: agl.SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agentlightning_autogen.recorder as module

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(module, "begin_span", broken)

    @agl.rollout
    async def work(task: str, llm: agl.LLM) -> float:
        solved = await solver(llm).run(task=task)
        written = await writer_and_checker(llm).run(task=task)
        return 1.0 if solved.messages[-1].to_text() == "The answer is 5." and written.stop_reason else 0.0

    result = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("scripted")}).dev(work, ["2 plus 3"])
    assert result.succeeded == 1 and result.mean_reward == 1.0
    assert recorder.errors >= 5  # each model call, the tool call and the team run


def test_a_failed_model_call_is_recorded_as_failed_and_reaches_the_agent(
    recorder: LightningRecorder, gateway: agl.Gateway, store: agl.SqliteStore
) -> None:
    @agl.rollout
    async def work(task: str, llm: agl.LLM) -> float:
        nowhere = llm.model_copy(update={"base_url": "http://127.0.0.1:9/v1"})  # nothing listens there
        agent = AssistantAgent("solver", model_client=chat_completion_client(nowhere, max_retries=0))
        try:
            await agent.run(task=task)
        except APIConnectionError:
            return 1.0
        return 0.0

    result = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("scripted")}).dev(work, ["2 plus 3"])
    assert result.mean_reward == 1.0
    (call,) = model_calls(rollout_spans(store, result.rollouts[0][0]))
    assert call.status.status_code == agl.StatusCode.ERROR
    assert call.attributes[semconv.ERROR_TYPE] == "APIConnectionError"
    assert call.attributes[semconv.GEN_AI_AGENT_NAME] == "solver"
