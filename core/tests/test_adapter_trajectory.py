"""Adapters: what trainers get out of an attempt's spans as a trajectory: which calls are transitions, of which
agent, carrying what (token ids, logprobs, messages), in which order, at scale."""

from __future__ import annotations

import json
import random

import pytest
from attempt_spans import TRACE_ID, Attempt, adapt
from conftest import make_span

import agentlightning as agl
from agentlightning import semconv
from agentlightning.adapter import AgentSelector, TraceToMessages, TraceToTrajectory

# --- agents ----------------------------------------------------------------------------------------


def test_agent_name_is_the_calls_own_else_the_nearest_ancestors() -> None:
    attempt = Attempt()
    planner = attempt.agent("planner", 0, 20)
    chain = attempt.span("chain", 1, 19, parent=planner)
    inherited = attempt.call(2, 3, parent=chain)
    coder = attempt.agent("coder", 4, 10, parent=chain)
    nested = attempt.call(5, 6, parent=attempt.span("tool", 5, 6, parent=coder))
    own = attempt.call(7, 8, parent=coder, agent="reviewer")
    orphan = attempt.call(11, 12)

    trajectory = adapt(attempt.spans)

    agents = {t.span_id: t.agent_name for t in trajectory.transitions}
    assert agents == {
        inherited.span_id: "planner",
        nested.span_id: "coder",
        own.span_id: "reviewer",
        orphan.span_id: None,
    }
    assert trajectory.agents == ["coder", "planner", "reviewer"]


def test_gateway_calls_are_attributed_through_the_callers_traceparent() -> None:
    attempt = Attempt()
    agent = attempt.agent("solver", 0, 10)
    judge = attempt.reward_computation(5, 9)
    traceparent = f"00-{TRACE_ID}-{{}}-01"
    to_agent = attempt.call(1, 2, attributes={semconv.AGL_CALLER_TRACEPARENT: traceparent.format(agent.span_id)})
    attempt.call(6, 7, attributes={semconv.AGL_CALLER_TRACEPARENT: traceparent.format(judge.span_id)})
    attempt.call(3, 4, attributes={semconv.AGL_CALLER_TRACEPARENT: "not a traceparent"})

    trajectory = adapt(attempt.spans)

    assert [(t.span_id == to_agent.span_id, t.agent_name) for t in trajectory.transitions] == [
        (True, "solver"),
        (False, None),
    ]


def test_a_call_recorded_by_an_integration_and_the_gateway_is_one_transition() -> None:
    """The integration knows the agent, the gateway the token ids: joined by response id or by traceparent,
    also when two agents' calls run in parallel; a reward after both goes to the call that ended last."""
    attempt = Attempt()
    graph = attempt.span("graph", 0, 20)
    tokens = {
        semconv.AGL_PROMPT_TOKEN_IDS: [1, 2],
        semconv.AGL_COMPLETION_TOKEN_IDS: [3],
        semconv.GEN_AI_RESPONSE_ID: "",
    }

    def gateway_call(start: float, end: float, **attributes: agl.AttributeValue) -> agl.Span:
        return attempt.call(start, end, attributes={**tokens, **attributes})

    # Two agents call in parallel; the integration spans end after the gateway's (the agent sees the answer later).
    writer = attempt.call(1, 5, parent=graph, agent="writer", attributes={semconv.GEN_AI_RESPONSE_ID: "chatcmpl-w"})
    checker = attempt.call(1, 4, parent=graph, agent="checker", attributes={semconv.GEN_AI_RESPONSE_ID: "chatcmpl-c"})
    checker_gw = gateway_call(2, 3.5, **{semconv.GEN_AI_RESPONSE_ID: "chatcmpl-c"})
    writer_gw = gateway_call(2, 3, **{semconv.GEN_AI_RESPONSE_ID: "chatcmpl-w"})
    attempt.reward(0.5, 4.5)  # after the checker's call as the agent saw it, before the writer's
    traced = attempt.call(6, 9, parent=graph, agent="writer")  # no response id: joined through the traceparent
    traced_gw = gateway_call(7, 8, **{semconv.AGL_CALLER_TRACEPARENT: f"00-{TRACE_ID}-{traced.span_id}-01"})
    attempt.call(10, 12, parent=graph, agent="writer", attributes={semconv.GEN_AI_RESPONSE_ID: "chatcmpl-n"})
    named_gw = gateway_call(10, 11, **{semconv.GEN_AI_RESPONSE_ID: "chatcmpl-n", semconv.GEN_AI_AGENT_NAME: "editor"})
    attempt.reward(1.0, 20)

    trajectory = adapt(attempt.spans)

    assert [(t.span_id, t.agent_name, t.reward) for t in trajectory.transitions] == [
        (checker_gw.span_id, "checker", 0.5),
        (writer_gw.span_id, "writer", None),
        (traced_gw.span_id, "writer", None),
        (named_gw.span_id, "editor", None),  # the gateway span's own name (from its URL) wins
    ]
    assert all(t.token_ids() == ([1, 2], [3]) for t in trajectory.transitions)
    writer_only = adapt(attempt.spans, agents=["writer"]).transitions
    assert [t.span_id for t in writer_only] == [writer_gw.span_id, traced_gw.span_id]
    assert writer.span_id not in {t.span_id for t in trajectory.transitions}
    assert checker.span_id not in {t.span_id for t in trajectory.transitions}


def test_calls_of_an_integration_alone_are_transitions_without_token_ids() -> None:
    attempt = Attempt()
    first = attempt.call(0, 1, agent="a", attributes={semconv.GEN_AI_RESPONSE_ID: "chatcmpl-1"})
    second = attempt.call(2, 3, agent="a", attributes={semconv.GEN_AI_RESPONSE_ID: "chatcmpl-2"})
    trajectory = adapt(attempt.spans)
    assert [t.span_id for t in trajectory.transitions] == [first.span_id, second.span_id]
    assert not any(t.has_token_ids for t in trajectory.transitions)


def test_agent_selector_takes_names_or_a_predicate() -> None:
    attempt = Attempt()
    attempt.call(1, 2, agent="solver")
    attempt.call(3, 4, agent="critic")
    attempt.call(5, 6, agent="solver")
    attempt.call(7, 8)  # no agent

    def agents_of(selector: AgentSelector) -> list[str | None]:
        return [t.agent_name for t in adapt(attempt.spans, agents=selector).transitions]

    assert agents_of(None) == ["solver", "critic", "solver", None]
    assert agents_of({"solver"}) == ["solver", "solver"]
    assert agents_of(["critic", "solver"]) == ["solver", "critic", "solver"]
    assert agents_of("solver") == ["solver", "solver"]  # one name, not a set of letters
    assert agents_of([]) == []
    assert agents_of(lambda name: name.startswith("c")) == ["critic"]
    selected = adapt(attempt.spans, agents={"solver"}).transitions
    assert [t.sequence for t in selected] == [0, 1]


def test_spans_of_several_attempts_are_refused() -> None:
    first, second = Attempt(attempt_id="at-1"), Attempt(attempt_id="at-2")
    first.call(1, 2)
    second.call(1, 2)

    with pytest.raises(ValueError, match=r"one attempt.*ro-1/at-1, ro-1/at-2"):
        TraceToTrajectory().adapt([*first.spans, *second.spans])
    with pytest.raises(ValueError, match="one attempt"):
        TraceToMessages().adapt([*first.spans, *second.spans])


def test_no_spans_give_an_empty_trajectory() -> None:
    trajectory = TraceToTrajectory().adapt([])

    assert trajectory == agl.Trajectory()
    assert (trajectory.rollout_id, trajectory.attempt_id, trajectory.final_reward) == (None, None, None)
    assert TraceToMessages().adapt([]) == []


# --- what a transition carries ---------------------------------------------------------------------


def test_token_ids_logprobs_and_call_details_are_carried_through() -> None:
    attempt = Attempt()
    attempt.call(
        1,
        2,
        agent="solver",
        attributes={
            semconv.GEN_AI_REQUEST_MODEL: "smollm2",
            semconv.GEN_AI_RESPONSE_MODEL: "smollm2-135m-instruct",
            semconv.GEN_AI_RESPONSE_ID: "chatcmpl-1",
            semconv.AGL_PROMPT_TOKEN_IDS: [1, 2, 3],
            semconv.AGL_COMPLETION_TOKEN_IDS: [4, 5],
            semconv.AGL_COMPLETION_LOGPROBS: [-0.5, 0],
            semconv.GEN_AI_INPUT_MESSAGES: json.dumps([{"role": "user", "content": "2+2?"}]),
            semconv.GEN_AI_OUTPUT_MESSAGES: json.dumps([{"role": "assistant", "content": "4"}]),
        },
    )
    attempt.call(3, 4, attributes={semconv.GEN_AI_REQUEST_MODEL: "smollm2"})

    with_tokens, without_tokens = adapt(attempt.spans).transitions

    assert with_tokens.prompt_token_ids == [1, 2, 3]
    assert with_tokens.completion_token_ids == [4, 5]
    assert with_tokens.logprobs == [-0.5, 0.0]
    assert with_tokens.has_token_ids
    assert with_tokens.model == "smollm2-135m-instruct"
    assert with_tokens.response_id == "chatcmpl-1"
    assert with_tokens.input_messages == [{"role": "user", "content": "2+2?"}]
    assert with_tokens.output_messages == [{"role": "assistant", "content": "4"}]
    assert (with_tokens.start_time, with_tokens.end_time) == (1, 2)
    assert with_tokens.token_ids() == ([1, 2, 3], [4, 5])
    assert not without_tokens.has_token_ids
    with pytest.raises(
        agl.MissingTokenIds, match=r"has no recorded prompt/completion token ids.*agentlightning-engine"
    ):
        without_tokens.token_ids()  # a hosted API's call: a trainer fails clearly rather than re-tokenize
    assert (without_tokens.prompt_token_ids, without_tokens.logprobs, without_tokens.tools) == (None, None, None)
    assert without_tokens.model == "smollm2"
    assert agl.Trajectory.model_validate_json(adapt(attempt.spans).model_dump_json()) == adapt(attempt.spans)


def test_text_completion_calls_are_transitions_and_other_operations_are_not() -> None:
    attempt = Attempt()
    completion = attempt.span(
        "text_completion", 1, 2, attributes={semconv.GEN_AI_OPERATION_NAME: semconv.GEN_AI_OPERATION_TEXT_COMPLETION}
    )
    attempt.span("tool", 3, 4, attributes={semconv.GEN_AI_OPERATION_NAME: semconv.GEN_AI_OPERATION_EXECUTE_TOOL})
    attempt.agent("solver", 0, 5)
    attempt.spans.append(make_span("ro-1", "at-1"))

    assert [t.span_id for t in adapt(attempt.spans).transitions] == [completion.span_id]


def test_malformed_attributes_never_cost_the_trajectory() -> None:
    attempt = Attempt()
    attempt.call(
        1,
        2,
        attributes={
            semconv.GEN_AI_INPUT_MESSAGES: "You are a helpful assistant. {not json",
            semconv.GEN_AI_OUTPUT_MESSAGES: '{"role": "assistant", "content": "hi"}',  # one message, not a list
            semconv.GEN_AI_TOOL_DEFINITIONS: "[{broken",
            semconv.AGL_PROMPT_TOKEN_IDS: ["1", "2"],
            semconv.AGL_COMPLETION_TOKEN_IDS: [True, False],
            semconv.AGL_COMPLETION_LOGPROBS: "-0.5",
            semconv.GEN_AI_RESPONSE_MODEL: 7,
            semconv.GEN_AI_AGENT_NAME: 3,
        },
    )
    attempt.call(
        3,
        4,
        attributes={
            semconv.GEN_AI_INPUT_MESSAGES: ['{"role": "user", "content": "a"}', "plain text"],
            semconv.GEN_AI_OUTPUT_MESSAGES: 42,
            semconv.GEN_AI_TOOL_DEFINITIONS: "[]",
        },
    )

    first, second = adapt(attempt.spans).transitions

    assert first.input_messages == ["You are a helpful assistant. {not json"]
    assert first.output_messages == [{"role": "assistant", "content": "hi"}]
    assert first.tools is None
    assert (first.prompt_token_ids, first.completion_token_ids, first.logprobs) == (None, None, None)
    assert (first.model, first.agent_name) == (None, None)
    assert second.input_messages == [{"role": "user", "content": "a"}, "plain text"]
    assert second.output_messages == []
    assert second.tools == []


def test_sequence_ids_order_the_spans_and_without_them_the_list_order_does() -> None:
    attempt = Attempt()
    attempt.call(1, 2)
    attempt.reward(0.5, at=3)
    attempt.reward(1.0, at=3)
    shuffled = list(reversed(attempt.spans))

    assert adapt(shuffled).final_reward == 1.0
    unnumbered = [span.model_copy(update={"sequence_id": None}) for span in attempt.spans]
    assert adapt(unnumbered).final_reward == 1.0
    assert adapt(list(reversed(unnumbered))).final_reward == 0.5


# --- scale -----------------------------------------------------------------------------------------


def test_a_thousand_span_attempt_adapts_correctly() -> None:
    rng = random.Random(0)
    attempt = Attempt()
    root = attempt.agent("orchestrator", 0, 10_000)
    expected: list[tuple[str, str, float | None]] = []  # (span id, agent, reward) of every agent call
    clock = 1.0
    parent = root
    for turn in range(200):
        agent = ("solver", "critic")[turn % 2]
        step = attempt.agent(agent, clock, clock + 4, parent=parent)
        call = attempt.call(
            clock + 1,
            clock + 2,
            parent=attempt.span("chain", clock + 0.5, clock + 3, parent=step),
            attributes={
                semconv.AGL_PROMPT_TOKEN_IDS: [rng.randrange(50_000) for _ in range(64)],
                semconv.AGL_COMPLETION_TOKEN_IDS: [rng.randrange(50_000) for _ in range(16)],
                semconv.AGL_COMPLETION_LOGPROBS: [-rng.random() for _ in range(16)],
                semconv.GEN_AI_INPUT_MESSAGES: json.dumps([{"role": "user", "content": f"turn {turn}"}]),
                semconv.GEN_AI_OUTPUT_MESSAGES: json.dumps([{"role": "assistant", "content": "ok"}]),
            },
        )
        reward = float(turn % 3) if turn % 4 == 0 else None
        if reward is not None:
            attempt.reward(reward, at=clock + 2.5)
        expected.append((call.span_id, agent, reward))
        # A judge every few turns, nested one level deeper each time: its calls never count.
        judge = attempt.reward_computation(clock + 3, clock + 3.9, parent=step)
        attempt.call(clock + 3.1, clock + 3.2, parent=judge)
        parent = step if turn % 10 else root  # chains of nested agents, reset now and then
        clock += 5
    attempt.reward(1.0, at=clock)
    spans = attempt.spans
    assert len(spans) >= 1_000

    trajectory = TraceToTrajectory(agents={"solver"}).adapt(spans)

    solver = [item for item in expected if item[1] == "solver"]
    assert [(t.span_id, t.agent_name, t.reward) for t in trajectory.transitions] == solver
    assert all(t.has_token_ids and len(t.logprobs or []) == 16 for t in trajectory.transitions)
    assert trajectory.final_reward == 1.0
    assert trajectory.agents == ["critic", "solver"]  # the orchestrator makes no call of its own
    assert len(TraceToMessages().adapt(spans)) == len(expected)
