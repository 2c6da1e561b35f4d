"""Selection rules on hand-made stores: reward threshold, best-of-n per task, failed and unrewarded rollouts,
whose calls count (agents=), and a selection of the user's own in the config."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from agentlightning_sft import Candidate, ConfigError, SFTConfig, read_candidates, select_rollouts
from factories import finished_rollout, llm_call

import agentlightning as agl


def _candidates(rollouts: list[tuple[str, float | None, dict[str, Any]]], agents: Any = None) -> list[Candidate]:
    async def build() -> list[Candidate]:
        store = agl.InMemoryStore()
        finished = [await finished_rollout(store, task, reward, **extra) for task, reward, extra in rollouts]
        return await read_candidates(store, finished, agents)

    return asyncio.run(build())


def _picked(selected: Sequence[Candidate]) -> list[tuple[str, float | None]]:
    return [(c.task_id, c.reward) for c in selected]


def test_reward_threshold_keeps_rollouts_at_or_above_it() -> None:
    candidates = _candidates([("t1", 0.2, {}), ("t1", 0.5, {}), ("t2", 0.9, {}), ("t3", 0.49, {})])

    assert _picked(select_rollouts(candidates, min_reward=0.5, best_of_n=None)) == [("t1", 0.5), ("t2", 0.9)]
    assert len(select_rollouts(candidates, min_reward=None, best_of_n=None)) == 4


def test_best_of_n_keeps_each_tasks_highest_rewards_earlier_first_on_ties() -> None:
    candidates = _candidates(
        [("t1", 0.1, {}), ("t1", 0.7, {}), ("t2", 0.3, {}), ("t1", 0.7, {}), ("t2", 0.8, {}), ("t1", 0.9, {})]
    )

    best = select_rollouts(candidates, min_reward=None, best_of_n=1)
    assert _picked(best) == [("t2", 0.8), ("t1", 0.9)]  # in rollout order
    best_two = select_rollouts(candidates, min_reward=None, best_of_n=2)
    assert _picked(best_two) == [("t1", 0.7), ("t2", 0.3), ("t2", 0.8), ("t1", 0.9)]
    # Of the two 0.7s, the earlier rollout is kept.
    assert best_two[0].rollout.rollout_id == candidates[1].rollout.rollout_id
    # The threshold applies first: t2's best (0.8) is the only one of t2 above 0.5, t1 keeps 0.9.
    assert _picked(select_rollouts(candidates, min_reward=0.75, best_of_n=1)) == [("t2", 0.8), ("t1", 0.9)]


def test_failed_unrewarded_and_callless_rollouts_are_never_selected() -> None:
    candidates = _candidates(
        [("t1", 1.0, {"failed": True}), ("t2", None, {}), ("t3", 1.0, {"calls": []}), ("t4", 1.0, {})]
    )

    assert [c.succeeded for c in candidates] == [False, True, True, True]
    assert _picked(select_rollouts(candidates, min_reward=None, best_of_n=None)) == [("t4", 1.0)]


def test_agents_select_whose_calls_become_examples() -> None:
    calls = [
        llm_call("planner", prompt=[1, 2], completion=[3], reply={"role": "assistant", "content": "plan"}),
        llm_call("coder", prompt=[1, 2, 3, 4], completion=[5, 6], reply={"role": "assistant", "content": "code"}),
        llm_call("planner", prompt=[1, 9], completion=[7, 8], reply={"role": "assistant", "content": "replan"}),
    ]
    (everyone,) = _candidates([("t1", 1.0, {"calls": calls})])
    (planner,) = _candidates([("t1", 1.0, {"calls": calls})], agents=["planner"])
    (coder,) = _candidates([("t1", 1.0, {"calls": calls})], agents="coder")

    assert [t.agent_name for t in everyone.trajectory.transitions] == ["planner", "coder", "planner"]
    assert [t.completion_token_ids for t in planner.trajectory.transitions] == [[3], [7, 8]]
    assert [e.messages[-1] for e in planner.examples] == [
        {"role": "assistant", "content": "plan"},
        {"role": "assistant", "content": "replan"},
    ]
    assert [e.agent_name for e in coder.examples] == ["coder"]
    # A rollout holding none of the selected agents' calls has nothing to train on.
    (nobody,) = _candidates([("t1", 1.0, {"calls": calls})], agents=["reviewer"])
    assert select_rollouts([nobody], min_reward=None, best_of_n=None) == []


def test_config_takes_a_selection_function_and_refuses_bad_values() -> None:
    def mine(candidates: Sequence[Candidate]) -> list[Candidate]:
        return [c for c in candidates if c.reward is not None]

    assert SFTConfig(select=mine).select is mine
    for bad in ({"best_of_n": 0}, {"min_reward": float("nan")}, {"learning_rate": 0.0}, {"rollouts_per_task": 0}):
        with pytest.raises(ConfigError):
            SFTConfig(**bad)
