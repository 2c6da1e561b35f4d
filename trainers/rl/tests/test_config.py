"""LightningRLConfig: defaults are usable, and every invalid setting is refused with the field named."""

from __future__ import annotations

from typing import Any

import pytest
from agentlightning_rl import ConfigError, LightningRLConfig, LoraSettings, RuntimeRewardRules


def test_defaults_are_valid_and_add_no_runtime_rewards() -> None:
    config = LightningRLConfig()
    assert config.credit == "identical" and config.runtime_rewards is None and config.lora is None
    assert config.kl_coef == 0.0 and config.loss_aggregation == "token"
    assert not RuntimeRewardRules().active


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"credit": "monte-carlo"}, "credit"),
        ({"loss_aggregation": "batch"}, "loss_aggregation"),
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": 1.5}, "gamma"),
        ({"credit": "discounted"}, "gamma"),  # gamma = 1 would make it identical
        ({"missing_final_reward": float("nan")}, "missing_final_reward"),
        ({"group_size": 0}, "group_size"),
        ({"advantage_epsilon": -1e-6}, "advantage_epsilon"),
        ({"step_advantage_weight": float("inf")}, "step_advantage_weight"),
        ({"clip_low": 0.0}, "clip_low"),
        ({"clip_low": 1.0}, "clip_low"),
        ({"clip_high": -0.2}, "clip_high"),
        ({"kl_coef": -0.1}, "kl_coef"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"micro_batch_size": 0}, "micro_batch_size"),
        ({"micro_batch_tokens": 0}, "micro_batch_tokens"),
        ({"lora": LoraSettings(adapter_per_agent=True)}, "agents"),
        ({"lora": LoraSettings(adapter_per_agent=True), "agents": lambda name: True}, "agents"),
    ],
)
def test_an_invalid_setting_is_refused_naming_its_field(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"LightningRLConfig\.{field}\b"):
        LightningRLConfig(**settings)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: LoraSettings(rank=0), "LoraSettings.rank"),
        (lambda: LoraSettings(alpha=0), "LoraSettings.alpha"),
        (lambda: LoraSettings(target_modules=()), "LoraSettings.target_modules"),
        (lambda: RuntimeRewardRules(tool_error=float("nan")), "RuntimeRewardRules.tool_error"),
        (lambda: RuntimeRewardRules(annotations={"": 1.0}), "RuntimeRewardRules.annotations"),
        (lambda: RuntimeRewardRules(annotations={"score": float("inf")}), "RuntimeRewardRules.annotations"),
    ],
)
def test_invalid_lora_and_rule_settings_are_refused_naming_the_field(make: Any, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        make()


def test_an_unknown_precision_is_refused_with_the_choices() -> None:
    with pytest.raises(
        ConfigError, match=r"LightningRLConfig\.precision must be one of 'auto', 'fp32', 'bf16'; got 'fp16'"
    ):
        LightningRLConfig(precision="fp16")  # type: ignore[arg-type]
    assert LightningRLConfig().precision == "fp32"


def test_a_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        LightningRLConfig(group_size=-1)


def test_per_agent_adapters_take_the_named_agents_sorted_and_one_string_is_one_agent() -> None:
    config = LightningRLConfig(agents=["solver", "critic"], lora=LoraSettings(adapter_per_agent=True))
    assert config.trained_agent_names == ["critic", "solver"]
    assert LightningRLConfig(agents="solver").trained_agent_names == ["solver"]
    assert LightningRLConfig().trained_agent_names is None
