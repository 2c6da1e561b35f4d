"""Multi-agent selection: only the selected agents' calls are trained, each agent's only through its own adapter."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from agentlightning_rl import (
    AgentAdapters,
    CreditedTrajectory,
    LightningRLConfig,
    LoraSettings,
    Sample,
    UntrainedAgent,
    agent_filter,
    compute_advantages,
    credit_trajectory,
    make_micro_batches,
    make_optimizer,
    select_agents,
    train_step,
)
from factories import call, trajectory

# A planner, the user simulator it talks to (environment), and a coder; intermediate rewards after each call.
CALLS = [
    call(0, agent="planner", reward=0.5, prompt=[10, 11], completion=[12, 13]),
    call(1, agent="user", reward=-1.0, prompt=[20, 21], completion=[22]),
    call(2, agent="coder", prompt=[30, 31], completion=[32, 33, 34]),
    call(3, agent=None, prompt=[40], completion=[41]),
]


def test_agent_filter_reads_selectors_like_the_adapter() -> None:
    names = ["planner", "user", "coder", None]
    assert [agent_filter(None)(n) for n in names] == [True, True, True, True]
    assert [agent_filter("planner")(n) for n in names] == [True, False, False, False]
    assert [agent_filter({"planner", "coder"})(n) for n in names] == [True, False, True, False]
    assert [agent_filter(lambda n: n.endswith("er"))(n) for n in names] == [True, True, True, False]


def test_selection_after_credit_keeps_the_environment_s_rewards_in_the_returns() -> None:
    credited = credit_trajectory(trajectory(*CALLS, final=1.0), LightningRLConfig(credit="intermediate"))
    assert credited.returns == [0.5, 0.0, 1.0, 1.0]  # the user's -1 after call 1 counts for calls 0 and 1
    planner = select_agents(credited, ["planner"])
    assert [(t.agent_name, t.sequence) for t in planner.transitions] == [("planner", 0)]
    assert planner.returns == [0.5]
    both = select_agents(credited, ["coder", "planner"])
    assert [(t.agent_name, t.sequence) for t in both.transitions] == [("planner", 0), ("coder", 1)]
    assert both.returns == [0.5, 1.0]
    assert select_agents(credited, None) is credited


def test_only_the_selected_agent_s_tokens_reach_a_micro_batch() -> None:
    config = LightningRLConfig(agents="planner")
    rollouts = []
    for i, final in enumerate([1.0, 0.0]):
        credited = credit_trajectory(trajectory(*CALLS, final=final, rollout=f"r{i}"), config)
        rollouts.append(select_agents(credited, config.agents))
    samples = compute_advantages({"task": rollouts}, config).samples
    assert {s.transition.agent_name for s in samples} == {"planner"}
    batches = make_micro_batches(samples, "token", micro_batch_size=8, micro_batch_tokens=None)
    trained = sorted(token for b in batches for token in b.input_ids[b.completion_mask].tolist())
    assert trained == [12, 12, 13, 13]


def lora_b(adapters: AgentAdapters, agent: str) -> dict[str, torch.Tensor]:
    adapter = adapters.adapter_names[agent]
    return {n: p for n, p in adapters.model.named_parameters() if f"lora_B.{adapter}." in n}


def samples_of(*agents: str) -> list[Sample]:
    # Behaviour logprobs far below the model's: ratios > 1, so positive advantages get clipped
    # and negative ones give a gradient.
    return [
        Sample(
            call(i, agent=agent, prompt=[5 + i, 6], completion=[7, 8 + i], logprobs=[-30.0, -30.0]),
            -1.0,
            -1.0,
            f"r{i}",
            "g",
        )
        for i, agent in enumerate(agents)
    ]


@pytest.fixture
def adapters(tiny_model: Any) -> AgentAdapters:
    settings = LoraSettings(rank=2, alpha=4, adapter_per_agent=True)
    config = LightningRLConfig(agents=["planner", "coder"], lora=settings)
    assert config.trained_agent_names is not None
    return AgentAdapters(tiny_model, settings, config.trained_agent_names)


def test_each_trained_agent_has_its_own_adapter_on_one_base_model(adapters: AgentAdapters) -> None:
    assert adapters.adapter_names == {"coder": "agent_coder", "planner": "agent_planner"}
    assert set(adapters.model.peft_config) == {"agent_coder", "agent_planner"}
    assert adapters.activate("planner") == "agent_planner" and adapters.model.active_adapter == "agent_planner"
    with pytest.raises(UntrainedAgent, match="'user'"):
        adapters.activate("user")


def test_only_the_selected_agent_s_adapter_receives_gradient(adapters: AgentAdapters) -> None:
    config = LightningRLConfig(learning_rate=1e-2, max_grad_norm=None)
    optimizer = make_optimizer(adapters.model, config)
    base = {n: p.detach().clone() for n, p in adapters.model.named_parameters() if "lora_" not in n}
    coder_before = {n: p.detach().clone() for n, p in lora_b(adapters, "coder").items()}
    batches = make_micro_batches(samples_of("planner", "planner"), "token", micro_batch_size=8, micro_batch_tokens=None)
    adapters.activate("coder")  # whatever was active, the planner's micro-batch switches to its adapter
    train_step(adapters.model, optimizer, batches, config, adapters=adapters)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b(adapters, "planner").values())
    assert all(p.grad is None for p in lora_b(adapters, "coder").values())
    assert all(torch.equal(p, coder_before[n]) for n, p in lora_b(adapters, "coder").items())
    assert all(p.abs().sum() > 0 for p in lora_b(adapters, "planner").values())  # moved from B = 0
    assert all(torch.equal(p, base[n]) for n, p in adapters.model.named_parameters() if "lora_" not in n)


def test_two_agents_trained_in_one_step_each_update_their_own_adapter(adapters: AgentAdapters) -> None:
    config = LightningRLConfig(learning_rate=1e-2, max_grad_norm=None)
    optimizer = make_optimizer(adapters.model, config)
    batches = make_micro_batches(samples_of("planner", "coder"), "token", micro_batch_size=8, micro_batch_tokens=None)
    assert sorted(b.agent_name for b in batches) == ["coder", "planner"]
    train_step(adapters.model, optimizer, batches, config, adapters=adapters)
    planner, coder = lora_b(adapters, "planner"), lora_b(adapters, "coder")
    assert all(p.abs().sum() > 0 for p in [*planner.values(), *coder.values()])
    # The two adapters learned from different calls, so they differ.
    assert any(not torch.equal(p, coder[n.replace("agent_planner", "agent_coder")]) for n, p in planner.items())


def test_a_call_of_an_agent_without_an_adapter_is_refused_in_training(adapters: AgentAdapters) -> None:
    config = LightningRLConfig()
    batches = make_micro_batches(samples_of("user"), "token", micro_batch_size=8, micro_batch_tokens=None)
    with pytest.raises(UntrainedAgent, match="select_agents"):
        train_step(adapters.model, make_optimizer(adapters.model, config), batches, config, adapters=adapters)


def test_a_shared_adapter_serves_every_agent(tiny_model: Any) -> None:
    adapters = AgentAdapters(tiny_model, LoraSettings(rank=2))
    assert adapters.adapter_names == {} and adapters.activate("anyone") == adapters.activate(None)
    unused = CreditedTrajectory(trajectory(), [])
    assert select_agents(unused, ["x"]).returns == []
