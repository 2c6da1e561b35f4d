"""SFT's configuration: every number that changes what is learned, with its default.

Read top to bottom, the fields follow an iteration: rollouts (iterations, tasks, rollouts per task) →
selection (reward threshold, best-of-n per task, or a function of yours) → fine-tuning (epochs, batches,
learning rate, LoRA).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentlightning.adapter import AgentSelector
from agentlightning.algorithm import ConfigError, LoraSettings

if TYPE_CHECKING:
    from agentlightning_sft.selection import Candidate

__all__ = ["ConfigError", "LoraSettings", "SFTConfig", "SelectFunction"]

#: A selection of your own: every candidate rollout of an iteration (failed ones too) → those to train on.
SelectFunction = Callable[[Sequence["Candidate"]], Sequence["Candidate"]]


@dataclass(frozen=True)
class SFTConfig:
    """Every setting of SFT. Invalid values raise :class:`ConfigError` naming the field.

    Attributes:
        iterations: rounds of rollouts → selection → fine-tuning.
        tasks_per_iteration: training tasks per iteration, taken in a shuffled order (reshuffled every pass).
        rollouts_per_task: rollouts of each task per iteration (the ``n`` of best-of-n).
        seed: seeds the task order, the order of examples in fine-tuning, and torch.
        success_threshold: a rollout whose final reward is at least this counts as a success (the success rate
            the progress bar, the metrics and the validation report give).
        agents: whose LLM calls become training examples (``None``: every call); the others are the environment.
        min_reward: keep only rollouts whose final reward is at least this; ``None`` keeps any reward.
        best_of_n: then keep at most this many rollouts of each task, highest reward first (ties: the earlier
            rollout); ``None`` keeps every rollout that passed ``min_reward``.
        select: a function of yours choosing the rollouts to train on; it replaces ``min_reward`` and
            ``best_of_n`` and sees every rollout of the iteration, failed ones and those without reward too.
        epochs: passes over an iteration's selected examples.
        batch_size: examples per optimizer step.
        micro_batch_size: at most this many examples in one forward/backward pass (gradients accumulate).
        learning_rate: AdamW's step size.
        max_grad_norm: clip the global gradient norm to this before each step; ``None`` does not clip.
        lora: LoRA settings (one adapter: ``adapter_per_agent`` is LightningRL's); ``None`` trains every weight.
    """

    iterations: int = 3
    tasks_per_iteration: int = 8
    rollouts_per_task: int = 4
    seed: int = 0
    success_threshold: float = 1.0
    agents: AgentSelector = None
    min_reward: float | None = 1.0
    best_of_n: int | None = 1
    select: SelectFunction | None = None
    epochs: int = 1
    batch_size: int = 8
    micro_batch_size: int = 4
    learning_rate: float = 1e-5
    max_grad_norm: float | None = 1.0
    lora: LoraSettings | None = None

    def __post_init__(self) -> None:
        for name in ("iterations", "tasks_per_iteration", "rollouts_per_task", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"SFTConfig.{name} must be at least 1, got {getattr(self, name)}.")
        if self.micro_batch_size < 1:
            raise ConfigError(f"SFTConfig.micro_batch_size must be at least 1, got {self.micro_batch_size}.")
        if not math.isfinite(self.success_threshold):
            raise ConfigError(f"SFTConfig.success_threshold must be a finite number, got {self.success_threshold}.")
        if self.min_reward is not None and not math.isfinite(self.min_reward):
            raise ConfigError(f"SFTConfig.min_reward must be a finite number or None, got {self.min_reward}.")
        if self.best_of_n is not None and self.best_of_n < 1:
            raise ConfigError(f"SFTConfig.best_of_n must be at least 1 or None, got {self.best_of_n}.")
        if self.select is not None and not callable(self.select):
            raise ConfigError(f"SFTConfig.select must be a function of the candidates, got {self.select!r}.")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"SFTConfig.learning_rate must be a positive number, got {self.learning_rate}.")
        if self.max_grad_norm is not None and not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ConfigError(f"SFTConfig.max_grad_norm must be a positive number or None, got {self.max_grad_norm}.")
        if self.lora is not None and self.lora.adapter_per_agent:
            raise ConfigError(
                "SFTConfig.lora.adapter_per_agent is set, but SFT trains one adapter for every selected agent; "
                "leave it False (LightningRL trains one per agent)."
            )
