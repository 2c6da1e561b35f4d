"""Group-relative advantages (GRPO) and step-level groups (GiGPO) on hand-made groups with known answers."""

from __future__ import annotations

import math

import pytest
from agentlightning_rl import CreditedTrajectory, LightningRLConfig, compute_advantages, group_advantages
from factories import call, credited, trajectory

from agentlightning import MissingTokenIds

EXACT = LightningRLConfig(advantage_epsilon=0.0)


def test_grpo_with_std_normalisation_on_single_call_rollouts() -> None:
    group = [credited([1.0], rollout="a"), credited([0.0], rollout="b"), credited([0.0], rollout="c")]
    group.append(credited([0.0], rollout="d"))
    # μ = 0.25, std = sqrt((0.75² + 3 · 0.25²) / 4) = sqrt(3) / 4
    result = group_advantages(group, EXACT)
    assert result is not None
    assert [a for (a,) in result] == pytest.approx(
        [math.sqrt(3), -1 / math.sqrt(3), -1 / math.sqrt(3), -1 / math.sqrt(3)]
    )


def test_grpo_without_std_normalisation_is_mean_centred_only() -> None:
    group = [credited([1.0], rollout="a"), credited([0.0], rollout="b"), credited([0.5], rollout="c")]
    result = group_advantages(group, LightningRLConfig(normalize_advantage_std=False))
    assert result == [[pytest.approx(0.5)], [pytest.approx(-0.5)], [pytest.approx(0.0)]]


def test_epsilon_is_added_to_the_standard_deviation() -> None:
    group = [credited([1.0], rollout="a"), credited([0.0], rollout="b")]  # μ = 0.5, std = 0.5
    result = group_advantages(group, LightningRLConfig(advantage_epsilon=0.5))
    assert result == [[pytest.approx(0.5)], [pytest.approx(-0.5)]]  # ±0.5 / (0.5 + 0.5)


def test_each_rollout_counts_once_in_the_baseline_however_many_calls_it_made() -> None:
    # Identical credit: rollout a (reward 1) made three calls, rollout b (reward 0) one.
    group = [credited([1.0, 1.0, 1.0], rollout="a"), credited([0.0], rollout="b")]
    # Per rollout: μ = 0.5, std = 0.5 → ±1 (a per-call mean would be 0.75 and favour the talkative rollout).
    assert group_advantages(group, EXACT) == [[1.0, 1.0, 1.0], [-1.0]]


def test_returns_that_differ_within_a_rollout_get_different_advantages() -> None:
    # Intermediate credit gave rollout a's calls returns 2 and 0; rollout b's single call 1.
    group = [credited([2.0, 0.0], rollout="a"), credited([1.0], rollout="b")]
    # μ = (1/2)·((2 + 0)/2 + 1) = 1;  std² = (1/2)·(((1 + 1)/2) + 0) = 0.5
    result = group_advantages(group, EXACT)
    assert result == [[pytest.approx(math.sqrt(2)), pytest.approx(-math.sqrt(2))], [0.0]]


def test_a_group_of_equal_returns_is_skipped_and_reported() -> None:
    groups = {
        "task-1": [credited([1.0], rollout="a"), credited([1.0, 1.0], rollout="b")],
        "task-2": [credited([1.0], rollout="c"), credited([0.0], rollout="d")],
        "task-3": [CreditedTrajectory(trajectory(rollout="e"), [])],
    }
    result = compute_advantages(groups, EXACT)
    assert result.skipped_groups == {"task-1": "all returns equal", "task-3": "no calls"}
    assert [(s.rollout_id, s.group_id, s.advantage, s.return_) for s in result.samples] == [
        ("c", "task-2", 1.0, 1.0),
        ("d", "task-2", -1.0, 0.0),
    ]


def test_without_skipping_a_group_of_equal_returns_gets_exactly_zero_advantages() -> None:
    group = [credited([0.1, 0.1], rollout="a"), credited([0.1], rollout="b"), credited([0.1], rollout="c")]
    assert group_advantages(group, LightningRLConfig(skip_equal_groups=False)) == [[0.0, 0.0], [0.0], [0.0]]
    assert group_advantages(group, LightningRLConfig()) is None


def test_step_grouping_compares_calls_that_saw_the_same_prompt() -> None:
    # Rollouts a (reward 1) and b (reward 0) open with the same prompt [7, 7]; c (reward 1) opens differently
    # and a's second call is a state nobody else reached.
    group = [
        credited([1.0, 1.0], rollout="a", prompts=[[7, 7], [8]]),
        credited([0.0], rollout="b", prompts=[[7, 7]]),
        credited([1.0], rollout="c", prompts=[[9]]),
    ]
    config = LightningRLConfig(advantage_epsilon=0.0, step_grouping=True, step_advantage_weight=0.5)
    # Group: μ = 2/3, std = sqrt(2)/3 → A_group = +1/sqrt(2) for reward 1, -sqrt(2) for reward 0.
    # Step group [7, 7] = {a0: 1, b0: 0}: μ_S = 0.5, std_S = 0.5 → A_step = ±1; the others are alone: 0.
    high, low = 1 / math.sqrt(2), -math.sqrt(2)
    assert group_advantages(group, config) == [
        [pytest.approx(high + 0.5), pytest.approx(high)],
        [pytest.approx(low - 0.5)],
        [pytest.approx(high)],
    ]


def test_step_grouping_keeps_agents_apart_and_can_skip_std_normalisation() -> None:
    same_prompt = [5, 5]
    a = CreditedTrajectory(trajectory(call(0, agent="solver", prompt=same_prompt), rollout="a"), [1.0])
    b = CreditedTrajectory(trajectory(call(0, agent="critic", prompt=same_prompt), rollout="b"), [0.0])
    c = CreditedTrajectory(trajectory(call(0, agent="solver", prompt=same_prompt), rollout="c"), [0.0])
    config = LightningRLConfig(normalize_advantage_std=False, step_grouping=True)
    # Group: μ = 1/3 → 2/3, -1/3, -1/3. Step group (solver, [5, 5]) = {a: 1, c: 0}: μ_S = 0.5 → ±0.5.
    assert group_advantages([a, b, c], config) == [
        [pytest.approx(2 / 3 + 0.5)],
        [pytest.approx(-1 / 3)],
        [pytest.approx(-1 / 3 - 0.5)],
    ]


def test_step_grouping_refuses_calls_without_token_ids() -> None:
    blind = call(0).model_copy(update={"prompt_token_ids": None})
    group = [CreditedTrajectory(trajectory(blind, rollout="a"), [1.0]), credited([0.0], rollout="b")]
    with pytest.raises(MissingTokenIds):
        group_advantages(group, LightningRLConfig(step_grouping=True))
