"""Credit assignment: each mode's returns on hand-made trajectories with known answers."""

from __future__ import annotations

import pytest
from agentlightning_rl import LightningRLConfig, MissingFinalReward, credit_trajectory, returns
from factories import call, trajectory

# Three calls; an emit_reward of 0.5 was recorded after the second one; final reward 1.0.
THREE_CALLS = trajectory(call(0), call(1, reward=0.5), call(2), final=1.0)


def test_identical_gives_every_call_the_final_reward() -> None:
    assert returns(THREE_CALLS, "identical", 0.5, 1.0) == [1.0, 1.0, 1.0]


def test_discounted_discounts_the_final_reward_once_per_later_call() -> None:
    # G_t = gamma^(T-1-t) R with gamma = 0.5, T = 3
    assert returns(THREE_CALLS, "discounted", 0.5, 1.0) == [0.25, 0.5, 1.0]


def test_intermediate_counts_every_later_reward_plus_the_final_one() -> None:
    # gamma = 1: G_2 = R = 1; G_1 = 0.5 + 1 = 1.5; G_0 = 0 + 1.5
    assert returns(THREE_CALLS, "intermediate", 1.0, 1.0) == [1.5, 1.5, 1.0]
    # gamma = 0.5: G_2 = 1; G_1 = 0.5 + 0.5·1 = 1; G_0 = 0 + 0.5·1 = 0.5
    assert returns(THREE_CALLS, "intermediate", 0.5, 1.0) == [0.5, 1.0, 1.0]


def test_intermediate_rewards_on_the_last_call_and_negative_ones_count() -> None:
    traj = trajectory(call(0, reward=-1.0), call(1, reward=2.0), final=0.0)
    # G_1 = 2 + 0 = 2; G_0 = -1 + 2 = 1
    assert returns(traj, "intermediate", 1.0, 0.0) == [1.0, 2.0]


def test_rewards_before_any_call_count_for_none() -> None:
    traj = trajectory(call(0), final=1.0).model_copy(update={"unassigned_rewards": [5.0]})
    assert returns(traj, "intermediate", 1.0, 1.0) == [1.0]


def test_an_empty_trajectory_has_no_returns() -> None:
    assert returns(trajectory(final=1.0), "intermediate", 0.9, 1.0) == []


def test_credit_trajectory_uses_the_configured_mode_and_keeps_the_trajectory() -> None:
    credited = credit_trajectory(THREE_CALLS, LightningRLConfig(credit="discounted", gamma=0.5))
    assert credited.returns == [0.25, 0.5, 1.0]
    assert credited.trajectory is THREE_CALLS and credited.rollout_id == "r0"


def test_a_missing_final_reward_gets_the_configured_value_or_is_refused() -> None:
    failed = trajectory(call(0, reward=0.25), call(1), final=None)
    assert credit_trajectory(failed, LightningRLConfig(credit="intermediate")).returns == [0.25, 0.0]
    assert credit_trajectory(failed, LightningRLConfig(missing_final_reward=-1.0)).returns == [-1.0, -1.0]
    with pytest.raises(MissingFinalReward, match="missing_final_reward"):
        credit_trajectory(failed, LightningRLConfig(missing_final_reward=None))
