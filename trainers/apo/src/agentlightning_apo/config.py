"""Every setting of APO, with its default. Invalid values raise :class:`ConfigError` naming the field."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from agentlightning.algorithm import ConfigError

__all__ = ["APOConfig", "ConfigError", "Selection", "AgentSelector"]

#: ``"beam"``: keep the ``beam_width`` candidates of highest mean validation reward. ``"pareto"``: keep the
#: candidates that are best on some validation task and that no other candidate dominates (as GEPA does).
Selection = Literal["beam", "pareto"]

#: Whose LLM calls a prompt's critique shows: a collection of agent names, or a predicate on the name.
AgentSelector = Collection[str] | Callable[[str], bool]


@dataclass(frozen=True)
class APOConfig:
    """Every setting of APO.

    Attributes:
        rounds: rounds of the search; each expands every beam candidate into ``branch_factor`` edits and scores them.
        beam_width: candidates kept after each round (with ``selection="pareto"``: at most this many).
        branch_factor: edits proposed per beam candidate per round (one critique and one edit each).
        train_batch_size: training tasks per round: every beam candidate runs this minibatch (the same tasks for all
            of them) and its critique reads those runs.
        val_batch_size: validation tasks every candidate is scored on, drawn once so every score covers the same
            tasks; ``None`` takes the whole validation set.
        val_rollouts_per_task: rollouts per validation task per candidate; a task's score is their mean reward.
        selection: how the beam is chosen after each round (:data:`Selection`).
        prompts: the names of the ``PromptTemplate`` resources to optimize; ``None`` optimizes every one in the
            initial resources. The others are published unchanged with every candidate.
        prompt_agents: prompt name → the agents whose LLM calls that prompt shapes; its critique shows only their
            calls (a prompt not named here: every call).
        missing_reward: the reward of a rollout that failed or recorded none.
        seed: seeds the order of the training tasks and the validation draw.
        optimizer_model: the optimizer LLM's model name.
        optimizer_base_url: its OpenAI-compatible base URL; ``None``: the ``openai`` client's default
            (``OPENAI_BASE_URL``, else api.openai.com).
        optimizer_api_key: its API key; ``None``: ``OPENAI_API_KEY``, else a placeholder (local servers need none).
        optimizer_temperature: sampling temperature of the critique and edit calls (above 0, so the edits of one
            parent differ).
        optimizer_max_tokens: the most tokens one optimizer reply may have; ``None``: the server's limit.
        optimizer_concurrency: optimizer calls in flight at once.
        critique_prompt_path: a file replacing the package's ``prompts/critique.md``.
        edit_prompt_path: a file replacing the package's ``prompts/edit.md``.
        critique_max_chars: the most characters of rendered runs one critique shows (lowest rewards first).
        message_max_chars: the most characters of one message (or tool result) in a rendered run.
    """

    rounds: int = 3
    beam_width: int = 2
    branch_factor: int = 2
    train_batch_size: int = 4
    val_batch_size: int | None = None
    val_rollouts_per_task: int = 1
    selection: Selection = "beam"
    prompts: Collection[str] | None = None
    prompt_agents: Mapping[str, AgentSelector] = field(default_factory=dict)
    missing_reward: float = 0.0
    seed: int = 0
    optimizer_model: str = "gpt-4.1-mini"
    optimizer_base_url: str | None = None
    optimizer_api_key: str | None = None
    optimizer_temperature: float = 1.0
    optimizer_max_tokens: int | None = None
    optimizer_concurrency: int = 4
    critique_prompt_path: str | Path | None = None
    edit_prompt_path: str | Path | None = None
    critique_max_chars: int = 12000
    message_max_chars: int = 800

    def __post_init__(self) -> None:
        for name in (
            "rounds",
            "beam_width",
            "branch_factor",
            "train_batch_size",
            "val_rollouts_per_task",
            "optimizer_concurrency",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"APOConfig.{name} must be at least 1, got {getattr(self, name)}.")
        for name in ("val_batch_size", "optimizer_max_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"APOConfig.{name} must be at least 1 or None, got {value}.")
        for name in ("critique_max_chars", "message_max_chars"):
            if getattr(self, name) < 100:
                raise ConfigError(f"APOConfig.{name} must be at least 100, got {getattr(self, name)}.")
        allowed = get_args(Selection)
        if self.selection not in allowed:
            raise ConfigError(
                f"APOConfig.selection must be one of {', '.join(map(repr, allowed))}; got {self.selection!r}."
            )
        if isinstance(self.prompts, str):
            raise ConfigError(
                f"APOConfig.prompts takes a collection of resource names; got the string {self.prompts!r} "
                f"(write prompts=[{self.prompts!r}])."
            )
        if self.prompts is not None and not self.prompts:
            raise ConfigError("APOConfig.prompts is empty; name at least one PromptTemplate resource, or pass None.")
        if not math.isfinite(self.missing_reward):
            raise ConfigError(f"APOConfig.missing_reward must be a finite number, got {self.missing_reward}.")
        if not (math.isfinite(self.optimizer_temperature) and self.optimizer_temperature >= 0):
            raise ConfigError(
                f"APOConfig.optimizer_temperature must be a finite number >= 0, got {self.optimizer_temperature}."
            )
        if not self.optimizer_model:
            raise ConfigError("APOConfig.optimizer_model is empty; name the optimizer LLM's model.")
        for name in ("critique_prompt_path", "edit_prompt_path"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"APOConfig.{name} is {str(path)!r}, which is not a file.")
