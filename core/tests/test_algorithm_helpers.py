"""What the trainers share: the shuffled task order, the reward summary, LoRA settings and their error."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from agentlightning.algorithm import ConfigError, LoraSettings, TaskOrder, next_tasks, reward_summary


def test_every_task_comes_once_a_pass_and_each_pass_is_shuffled_anew() -> None:
    dataset = [f"task-{i}" for i in range(10)]
    order, rng = TaskOrder(), random.Random(0)
    passes = [next_tasks(dataset, 10, order, rng) for _ in range(3)]
    for taken in passes:
        assert sorted(taken) == dataset
    assert passes[0] != passes[1] and passes[1] != passes[2]
    assert passes[0] != dataset  # shuffled, not the dataset's order


def test_a_batch_that_runs_past_the_pass_continues_into_a_new_one() -> None:
    dataset = list(range(5))
    order, rng = TaskOrder(), random.Random(1)
    first, second = next_tasks(dataset, 3, order, rng), next_tasks(dataset, 3, order, rng)
    assert len(set(first)) == 3
    assert set(first) | set(second[:2]) == set(dataset)  # the first pass's last two, then a new pass
    assert order.position == 1 and sorted(order.order) == dataset


def test_the_same_seed_draws_the_same_tasks() -> None:
    dataset = list(range(7))

    def draws(seed: int) -> list[int]:
        order, rng = TaskOrder(), random.Random(seed)
        return [task for _ in range(4) for task in next_tasks(dataset, 3, order, rng)]

    assert draws(3) == draws(3)
    assert draws(3) != draws(4)


def test_a_run_resumed_from_the_saved_order_and_rng_state_draws_what_it_would_have() -> None:
    @dataclass
    class Checkpointed:  # a trainer's own state with the two attributes, as LightningRL's TrainingState
        order: list[int] = field(default_factory=list)
        position: int = 0

    dataset = list(range(6))
    uninterrupted_order, uninterrupted_rng = TaskOrder(), random.Random(5)
    expected = [next_tasks(dataset, 4, uninterrupted_order, uninterrupted_rng) for _ in range(4)]

    state, rng = Checkpointed(), random.Random(5)
    drawn = [next_tasks(dataset, 4, state, rng) for _ in range(2)]
    saved = json.dumps({"order": state.order, "position": state.position})
    rng_state = rng.getstate()

    payload = json.loads(saved)
    resumed, resumed_rng = Checkpointed(payload["order"], payload["position"]), random.Random()
    resumed_rng.setstate(rng_state)
    drawn += [next_tasks(dataset, 4, resumed, resumed_rng) for _ in range(2)]
    assert drawn == expected


def test_the_reward_summary_gives_the_mean_and_the_share_at_or_above_the_threshold() -> None:
    summary = reward_summary([1.0, 0.5, 0.0, 0.75], success_threshold=0.75)
    assert summary == {"reward_mean": pytest.approx(0.5625), "success_rate": 0.5}
    assert reward_summary([-1.0], success_threshold=0.0) == {"reward_mean": -1.0, "success_rate": 0.0}


@pytest.mark.parametrize(
    ("settings", "named"),
    [({"rank": 0}, "LoraSettings.rank"), ({"alpha": 0}, "LoraSettings.alpha"), ({"target_modules": ()}, "target")],
)
def test_lora_settings_out_of_range_raise_a_config_error_naming_the_field(settings: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named) as raised:
        LoraSettings(**settings)
    assert isinstance(raised.value, ValueError)
