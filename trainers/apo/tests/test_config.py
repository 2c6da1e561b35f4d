"""APOConfig refuses settings that cannot work, naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agentlightning_apo import APOConfig, ConfigError


def test_defaults_are_valid() -> None:
    config = APOConfig()
    assert (config.rounds, config.beam_width, config.branch_factor, config.selection) == (3, 2, 2, "beam")
    assert config.prompts is None and config.val_batch_size is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"rounds": 0}, "rounds must be at least 1"),
        ({"beam_width": 0}, "beam_width must be at least 1"),
        ({"branch_factor": 0}, "branch_factor must be at least 1"),
        ({"train_batch_size": 0}, "train_batch_size must be at least 1"),
        ({"val_batch_size": 0}, "val_batch_size must be at least 1 or None"),
        ({"selection": "best"}, "selection must be one of 'beam', 'pareto'"),
        ({"prompts": "system_prompt"}, "write prompts=\\['system_prompt'\\]"),
        ({"prompts": []}, "prompts is empty"),
        ({"missing_reward": float("nan")}, "missing_reward must be a finite number"),
        ({"optimizer_temperature": -1.0}, "optimizer_temperature"),
        ({"optimizer_model": ""}, "optimizer_model is empty"),
        ({"critique_prompt_path": "/no/such/file.md"}, "critique_prompt_path .* not a file"),
    ],
)
def test_invalid_settings_raise_config_error_naming_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        APOConfig(**fields)


def test_prompt_files_must_exist(tmp_path: Path) -> None:
    mine = tmp_path / "critique.md"
    mine.write_text("Critique {template}")
    assert APOConfig(critique_prompt_path=mine).critique_prompt_path == mine
