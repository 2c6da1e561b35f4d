"""Automatic intermediate rewards: which spans give a reward, and which call it lands on."""

from __future__ import annotations

from typing import Any

from agentlightning_rl import (
    LightningRLConfig,
    RuntimeRewardRules,
    add_runtime_rewards,
    credit_trajectory,
    runtime_rewards,
    with_runtime_rewards,
)
from factories import call, trajectory

import agentlightning as agl
from agentlightning import semconv

_ids = iter(range(1, 10_000))


def span(name: str, start: float, end: float | None = None, *, error: bool = False, **attributes: Any) -> agl.Span:
    number = next(_ids)
    parent = attributes.pop("parent", None)
    return agl.Span(
        rollout_id="r0",
        attempt_id="a0",
        sequence_id=number,
        trace_id="0" * 32,
        span_id=f"{number:016x}",
        parent_id=parent,
        name=name,
        start_time=start,
        end_time=start if end is None else end,
        attributes=attributes,
        status=agl.SpanStatus(status_code=agl.StatusCode.ERROR if error else agl.StatusCode.UNSET),
    )


def tool(start: float, *, error: bool, **attributes: Any) -> agl.Span:
    return span(
        "execute_tool search",
        start,
        start + 0.1,
        error=error,
        **{semconv.GEN_AI_OPERATION_NAME: semconv.GEN_AI_OPERATION_EXECUTE_TOOL, **attributes},
    )


def annotation(start: float, **values: Any) -> agl.Span:
    return span(semconv.SPAN_ANNOTATION, start, **{semconv.AGL_ANNOTATION_PREFIX + k: v for k, v in values.items()})


RULES = RuntimeRewardRules(tool_error=-0.5, exception=-1.0, annotations={"score": 2.0, "helpful": 0.25})


def test_each_rule_reads_its_signal_and_ignores_the_rest() -> None:
    judge = span("agentlightning.operation judge", 40.0, 41.0, **{semconv.AGL_OPERATION_KIND: "reward"})
    spans = [
        tool(15.0, error=True),  # a failed tool call
        tool(16.0, error=False),  # a tool call that worked: nothing
        tool(17.0, error=False, **{semconv.ERROR_TYPE: "TimeoutError"}),  # error.type alone says it failed too
        annotation(25.0, score=0.5),  # numeric: weight * value
        annotation(26.0, helpful=True, other=3),  # bool counts 1; unconfigured keys nothing
        annotation(27.0, score="great"),  # not a number: the weight
        span(semconv.SPAN_EXCEPTION, 35.0, error=True, **{semconv.EXCEPTION_TYPE: "ValueError"}),
        judge,
        tool(40.5, error=True, parent=judge.span_id),  # the judge's failure is not the agent's
    ]
    found = runtime_rewards(spans, RULES)
    assert [(r.time, r.rule, r.value) for r in found] == [
        (15.0, "tool_error", -0.5),
        (17.0, "tool_error", -0.5),
        (25.0, "annotation:score", 1.0),
        (26.0, "annotation:helpful", 0.25),
        (27.0, "annotation:score", 2.0),
        (35.0, "exception", -1.0),
    ]
    assert found[0].span_id == spans[0].span_id


def test_rules_are_off_by_default() -> None:
    spans = [tool(15.0, error=True), span(semconv.SPAN_EXCEPTION, 16.0, error=True)]
    assert runtime_rewards(spans, RuntimeRewardRules()) == []
    traj = trajectory(call(0, end=10.0))
    assert with_runtime_rewards(traj, spans, LightningRLConfig().runtime_rewards) is traj


def test_a_reward_goes_to_the_last_call_that_ended_before_it_like_emit_reward() -> None:
    traj = trajectory(call(0, end=10.0), call(1, end=20.0, reward=0.25), call(2, end=30.0), final=1.0)
    spans = [
        annotation(5.0, score=1.0),  # before any call: unassigned
        tool(15.0, error=True),  # after call 0
        annotation(20.0, score=0.5),  # exactly when call 1 ended: counts for call 1
        span(semconv.SPAN_EXCEPTION, 35.0, error=True),  # after the last call
    ]
    result = with_runtime_rewards(traj, spans, RULES)
    assert [t.reward for t in result.transitions] == [-0.5, 0.25 + 1.0, -1.0]
    assert result.unassigned_rewards == [2.0]
    assert result.final_reward == 1.0  # untouched
    assert [t.reward for t in traj.transitions] == [None, 0.25, None]  # the input is not modified


def test_runtime_rewards_feed_intermediate_credit_on_a_trajectory_the_adapter_built() -> None:
    def llm(start: float, end: float, agent: str) -> agl.Span:
        return span(
            "chat tiny",
            start,
            end,
            **{
                semconv.GEN_AI_OPERATION_NAME: semconv.GEN_AI_OPERATION_CHAT,
                semconv.GEN_AI_AGENT_NAME: agent,
                semconv.AGL_PROMPT_TOKEN_IDS: [1, 2],
                semconv.AGL_COMPLETION_TOKEN_IDS: [3],
                semconv.AGL_COMPLETION_LOGPROBS: [-0.5],
            },
        )

    spans = [
        llm(0.0, 1.0, "solver"),
        tool(1.5, error=True),  # the solver's tool call failed
        llm(2.0, 3.0, "solver"),
        span(semconv.SPAN_REWARD, 4.0, **{semconv.AGL_REWARD_VALUE: 1.0}),  # the agent's final reward
    ]
    traj = agl.TraceToTrajectory().adapt(spans)
    assert traj.final_reward == 1.0 and [t.reward for t in traj.transitions] == [None, None]
    traj = with_runtime_rewards(traj, spans, RuntimeRewardRules(tool_error=-0.5))
    # G_1 = 1.0; G_0 = -0.5 + 1.0
    assert credit_trajectory(traj, LightningRLConfig(credit="intermediate")).returns == [0.5, 1.0]


def test_an_attempt_that_raised_keeps_no_final_reward_and_the_penalty_stays_intermediate() -> None:
    traj = trajectory(call(0, end=10.0), final=None)
    result = add_runtime_rewards(traj, runtime_rewards([span(semconv.SPAN_EXCEPTION, 11.0, error=True)], RULES))
    assert result.final_reward is None and result.transitions[0].reward == -1.0
    # missing_final_reward = 0: G_0 = -1 + 0
    assert credit_trajectory(result, LightningRLConfig(credit="intermediate")).returns == [-1.0]
