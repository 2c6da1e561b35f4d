"""Adapters and rewards: which LLM call each reward goes to, which is final, and which calls are no transitions
(those inside a reward computation, failed ones)."""

from __future__ import annotations

from attempt_spans import Attempt, adapt

import agentlightning as agl
from agentlightning import semconv
from agentlightning.adapter import TraceToMessages

# --- rewards ---------------------------------------------------------------------------------------


def test_last_reward_is_final_and_earlier_ones_go_to_the_call_before_them() -> None:
    attempt = Attempt()
    first = attempt.call(1, 2)
    attempt.reward(0.25, at=2.5)
    attempt.reward(0.5, at=2.6)
    second = attempt.call(3, 4)
    third = attempt.call(5, 6)
    attempt.reward(0.125, at=7)
    attempt.reward(1.0, at=8)  # the agent's returned reward, recorded last by the runner

    trajectory = adapt(attempt.spans)

    assert (trajectory.rollout_id, trajectory.attempt_id) == ("ro-1", "at-1")
    assert [t.span_id for t in trajectory.transitions] == [first.span_id, second.span_id, third.span_id]
    assert [t.sequence for t in trajectory.transitions] == [0, 1, 2]
    assert [t.reward for t in trajectory.transitions] == [0.75, None, 0.125]
    assert trajectory.final_reward == 1.0
    assert trajectory.unassigned_rewards == []


def test_final_reward_is_the_last_in_sequence_order_even_if_not_the_latest_in_time() -> None:
    attempt = Attempt()
    attempt.call(1, 2)
    attempt.reward(0.3, at=5)
    attempt.reward(0.9, at=4)  # recorded last: the final reward, whatever its timestamp

    trajectory = adapt(attempt.spans)

    assert trajectory.final_reward == 0.9
    assert trajectory.transitions[0].reward == 0.3


def test_a_single_reward_is_final_and_no_call_gets_it() -> None:
    attempt = Attempt()
    attempt.call(1, 2)
    attempt.reward(1.0, at=3)

    trajectory = adapt(attempt.spans)

    assert trajectory.final_reward == 1.0
    assert trajectory.transitions[0].reward is None


def test_no_reward_at_all() -> None:
    attempt = Attempt()
    attempt.call(1, 2)
    attempt.span(semconv.SPAN_REWARD, 3, attributes={semconv.AGL_REWARD_VALUE: "high"})  # not a number: ignored

    trajectory = adapt(attempt.spans)

    assert trajectory.final_reward is None
    assert trajectory.transitions[0].reward is None


def test_intermediate_reward_goes_to_the_preceding_call_even_of_an_unselected_agent() -> None:
    attempt = Attempt()
    solver = attempt.call(1, 2, agent="solver")
    attempt.reward(0.5, at=2.5)  # rewards the solver's call
    attempt.call(3, 4, agent="critic")
    attempt.reward(0.25, at=4.5)  # rewards the critic's call: must not move onto the solver's
    attempt.reward(1.0, at=5)

    only_solver = adapt(attempt.spans, agents=["solver"])

    assert [t.span_id for t in only_solver.transitions] == [solver.span_id]
    assert only_solver.transitions[0].reward == 0.5
    assert only_solver.agents == ["critic", "solver"]
    both = adapt(attempt.spans)
    assert [(t.agent_name, t.reward) for t in both.transitions] == [("solver", 0.5), ("critic", 0.25)]


def test_reward_before_any_call_is_kept_unassigned() -> None:
    attempt = Attempt()
    attempt.reward(0.1, at=0.5)
    attempt.reward(0.2, at=0.7)
    attempt.call(1, 2)
    attempt.reward(1.0, at=3)

    trajectory = adapt(attempt.spans)

    assert trajectory.unassigned_rewards == [0.1, 0.2]
    assert trajectory.transitions[0].reward is None
    assert trajectory.final_reward == 1.0


def test_a_call_still_running_when_the_reward_is_recorded_does_not_get_it() -> None:
    attempt = Attempt()
    first = attempt.call(1, 2)
    attempt.call(1.5, 4)  # started before the reward, ended after it
    attempt.reward(0.5, at=3)
    attempt.reward(1.0, at=5)

    trajectory = adapt(attempt.spans)

    assert [(t.span_id == first.span_id, t.reward) for t in trajectory.transitions] == [(True, 0.5), (False, None)]


def test_ties_in_time_are_broken_by_sequence() -> None:
    attempt = Attempt()
    attempt.reward(0.1, at=2)  # recorded before the call that ends at the same instant
    attempt.call(1, 2)
    attempt.reward(0.2, at=2)  # recorded after it
    attempt.reward(1.0, at=3)

    trajectory = adapt(attempt.spans)

    assert trajectory.unassigned_rewards == [0.1]
    assert trajectory.transitions[0].reward == 0.2


# --- reward computations ---------------------------------------------------------------------------


def test_llm_calls_inside_a_reward_computation_are_not_transitions() -> None:
    attempt = Attempt()
    root = attempt.agent("solver", 0, 20)
    answer = attempt.call(1, 2, parent=root)
    judge = attempt.reward_computation(3, 10, parent=root)
    step = attempt.span("judge.step", 4, 9, parent=judge)
    attempt.call(5, 6, parent=step, agent="judge")  # two levels below the reward computation
    attempt.reward(0.5, at=7, parent=step)  # emitted inside the computation: still counts, on the answer
    attempt.call(8, 9, parent=judge)
    attempt.reward(1.0, at=11, parent=judge)

    trajectory = adapt(attempt.spans)

    assert [t.span_id for t in trajectory.transitions] == [answer.span_id]
    assert trajectory.transitions[0].reward == 0.5
    assert trajectory.final_reward == 1.0
    assert trajectory.agents == ["solver"]
    assert [e.span_id for e in TraceToMessages().adapt(attempt.spans)] == [answer.span_id]


def test_failed_calls_are_not_transitions_and_their_reward_goes_to_the_answered_call_before() -> None:
    attempt = Attempt()
    answered = attempt.call(0.0, 1.0)
    failed = attempt.call(1.5, 2.0)
    failed.status = agl.SpanStatus(status_code=agl.StatusCode.ERROR, description="upstream down")
    attempt.reward(0.5, at=2.5)
    attempt.reward(1.0, at=3.0)
    trajectory = adapt(attempt.spans)
    assert [t.span_id for t in trajectory.transitions] == [answered.span_id]
    assert trajectory.transitions[0].reward == 0.5 and trajectory.final_reward == 1.0
