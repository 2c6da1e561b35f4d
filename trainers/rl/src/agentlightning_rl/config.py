# The formulas are written in their papers' notation (Greek letters, ×, ℓ).
"""LightningRL's configuration: every number that changes what is learned, with its default.

Read top to bottom, the fields follow the algorithm: the loop (iterations, tasks per iteration,
validation) → runtime rewards (off by default) → credit assignment (rewards → per-call returns) →
advantages (returns → group-relative advantages) → loss (clipped policy gradient, KL, aggregation) →
optimisation (learning rate, micro-batches, LoRA, precision).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from agentlightning.adapter import AgentSelector
from agentlightning.algorithm import ConfigError, LoraSettings

__all__ = [
    "ConfigError",
    "CreditMode",
    "LightningRLConfig",
    "LoraSettings",
    "LossAggregation",
    "Precision",
    "RuntimeRewardRules",
]

#: How a trajectory's rewards become each call's return (see :mod:`agentlightning_rl.credit`).
CreditMode = Literal["identical", "discounted", "intermediate"]
#: How per-token losses are averaged (see :mod:`agentlightning_rl.batch`).
LossAggregation = Literal["token", "sequence", "rollout"]
#: The arithmetic of the forward and backward passes, and of generation (see :mod:`agentlightning_rl.precision`).
Precision = Literal["auto", "fp32", "bf16"]


@dataclass(frozen=True)
class RuntimeRewardRules:
    """Intermediate rewards read from what the spans already say happened (see :mod:`agentlightning_rl.rewards`).

    Each rule is off while its value is ``None`` / empty. A rule's reward counts exactly like an
    ``agl.emit_reward`` recorded when the signal happened: it goes to the last LLM call before it.

    Attributes:
        tool_error: reward for each tool call whose span ended in error (``execute_tool``, status error).
        exception: reward for each ``agentlightning.exception`` span (the agent or a runner recorded one).
        annotations: annotation key (without the ``agentlightning.annotation.`` prefix) → weight. An annotation
            span carrying that key adds ``weight × value`` for a numeric value (a bool counts 1 / 0), ``weight``
            for any other value.
    """

    tool_error: float | None = None
    exception: float | None = None
    annotations: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("tool_error", "exception"):
            value = getattr(self, name)
            if value is not None:
                _finite(f"RuntimeRewardRules.{name}", value)
        for key, weight in self.annotations.items():
            if not key:
                raise ConfigError("RuntimeRewardRules.annotations has an empty key; name the annotation.")
            _finite(f"RuntimeRewardRules.annotations[{key!r}]", weight)

    @property
    def active(self) -> bool:
        """Whether any rule can produce a reward."""
        return self.tool_error is not None or self.exception is not None or bool(self.annotations)


@dataclass(frozen=True)
class LightningRLConfig:
    """Every setting of LightningRL. Invalid values raise :class:`ConfigError` naming the field.

    Attributes:
        iterations: training iterations; each runs ``group_size`` rollouts of ``tasks_per_iteration`` tasks and
            takes one optimizer step on them.
        tasks_per_iteration: training tasks per iteration, taken in a shuffled order (reshuffled every pass).
        validate_every: run the validation set every this many iterations (and always before the first and
            after the last); 0 validates only before and after.
        checkpoint_every: save a resumable checkpoint every this many iterations (and after the last) when a
            checkpoint folder is given; 0 saves only after the last.
        seed: seeds the task order and torch (sampling in the engine).
        success_threshold: a rollout whose final reward is at least this counts as a success (the accuracy
            the progress bar and the metrics report).
        agents: whose LLM calls are trained (``None``: every call); the others are the environment.
        runtime_rewards: rules turning tool errors, exceptions and annotations into intermediate rewards;
            ``None`` (default) adds none.
        credit: ``"identical"`` (every call gets the final reward, as in the Agent Lightning paper),
            ``"discounted"`` (the final reward discounted by ``gamma`` per later call) or ``"intermediate"``
            (every reward recorded after a call, discounted by ``gamma`` per call, plus the final reward).
        gamma: discount per LLM call, in (0, 1]. ``"discounted"`` needs ``gamma < 1`` (else it is identical).
        missing_final_reward: the final reward of an attempt that recorded none (a crash, a timeout);
            ``None`` refuses such trajectories (:class:`~agentlightning_rl.credit.MissingFinalReward`).
        group_size: rollouts per task; a group is the rollouts of one task (one ``group_id``).
        normalize_advantage_std: divide group-centred returns by the group's standard deviation (GRPO);
            ``False`` keeps them mean-centred only (Dr. GRPO).
        advantage_epsilon: added to the standard deviation before dividing.
        step_grouping: add a step-level advantage over calls of the group that saw the same prompt
            (same agent, same prompt token ids), as GiGPO does.
        step_advantage_weight: ``ω`` in ``A = A_group + ω · A_step``.
        skip_equal_groups: drop groups whose returns are all equal (their advantages are all zero).
        clip_low: ``ε_low``: the importance ratio is clipped below at ``1 - ε_low``.
        clip_high: ``ε_high``: and above at ``1 + ε_high`` (DAPO's "clip-higher" raises it, e.g. 0.28).
        kl_coef: ``β``, weight of the k3 KL estimate to the frozen reference model; 0 computes no reference.
        loss_aggregation: ``"token"`` (mean over every completion token of the step, DAPO),
            ``"sequence"`` (mean within each call, then over calls, GRPO) or ``"rollout"`` (mean within
            each rollout's calls, then over rollouts).
        learning_rate: the optimizer's step size.
        max_grad_norm: clip the global gradient norm to this before the step; ``None`` does not clip.
        micro_batch_size: at most this many sequences in one forward/backward pass.
        micro_batch_tokens: at most this many (padded) tokens in one pass; ``None``: no token bound.
        share_prompts: calls that share a prefix run it once in the forward and backward pass: as prefix trees
            (every distinct prefix token once: a group's prompt, the common system message, an agent's earlier
            call inside its next one) where the model's attention takes a 4D mask, else calls with identical
            prompts share the prompt's pass. The same loss and gradient, fewer tokens
            (:mod:`agentlightning_rl.prefix_tree`, :mod:`agentlightning_rl.batch`).
        lora: LoRA settings; ``None`` trains every weight.
        precision: ``"fp32"`` (default: every pass in float32), ``"bf16"`` (bfloat16 mixed precision: the
            forward and backward passes, and the engine's generation, run under ``torch.autocast`` in bfloat16,
            while the weights, their gradients and the optimizer's state stay float32, and logprobs are taken in
            float32 from the logits; what TRL's ``bf16=True`` does), or ``"auto"``: bf16 where the hardware
            computes it natively (a CUDA GPU with bfloat16, a CPU with AVX-512 BF16 or AMX), else fp32. On a
            CPU without them bfloat16 is emulated and several times slower than float32
            (:mod:`agentlightning_rl.precision`). fp32 is the default until bf16's speed and training quality
            have been measured on such hardware (the quick-start's figures are fp32's).
    """

    iterations: int = 20
    tasks_per_iteration: int = 8
    validate_every: int = 5
    checkpoint_every: int = 5
    seed: int = 0
    success_threshold: float = 1.0
    agents: AgentSelector = None
    runtime_rewards: RuntimeRewardRules | None = None
    credit: CreditMode = "identical"
    gamma: float = 1.0
    missing_final_reward: float | None = 0.0
    group_size: int = 4
    normalize_advantage_std: bool = True
    advantage_epsilon: float = 1e-6
    step_grouping: bool = False
    step_advantage_weight: float = 1.0
    skip_equal_groups: bool = True
    clip_low: float = 0.2
    clip_high: float = 0.2
    kl_coef: float = 0.0
    loss_aggregation: LossAggregation = "token"
    learning_rate: float = 1e-6
    max_grad_norm: float | None = 1.0
    micro_batch_size: int = 8
    micro_batch_tokens: int | None = 4096
    share_prompts: bool = True
    lora: LoraSettings | None = None
    precision: Precision = "fp32"

    def __post_init__(self) -> None:
        for name in ("iterations", "tasks_per_iteration"):
            if getattr(self, name) < 1:
                raise ConfigError(f"LightningRLConfig.{name} must be at least 1, got {getattr(self, name)}.")
        for name in ("validate_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"LightningRLConfig.{name} must be 0 or more, got {getattr(self, name)}.")
        _finite("LightningRLConfig.success_threshold", self.success_threshold)
        _choice("credit", self.credit, CreditMode)
        _choice("loss_aggregation", self.loss_aggregation, LossAggregation)
        if not (math.isfinite(self.gamma) and 0 < self.gamma <= 1):
            raise ConfigError(f"LightningRLConfig.gamma must be in (0, 1], got {self.gamma}.")
        if self.credit == "discounted" and self.gamma == 1:
            raise ConfigError(
                "LightningRLConfig.gamma is 1 with credit='discounted', which then equals credit='identical'; "
                "set gamma below 1 (e.g. 0.95) or use credit='identical'."
            )
        if self.missing_final_reward is not None:
            _finite("LightningRLConfig.missing_final_reward", self.missing_final_reward)
        if self.group_size < 1:
            raise ConfigError(f"LightningRLConfig.group_size must be at least 1, got {self.group_size}.")
        if not (math.isfinite(self.advantage_epsilon) and self.advantage_epsilon >= 0):
            raise ConfigError(
                f"LightningRLConfig.advantage_epsilon must be a finite number >= 0, got {self.advantage_epsilon}."
            )
        _finite("LightningRLConfig.step_advantage_weight", self.step_advantage_weight)
        for name in ("clip_low", "clip_high"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"LightningRLConfig.{name} must be a positive number, got {value}.")
        if self.clip_low >= 1:
            raise ConfigError(
                f"LightningRLConfig.clip_low must be below 1 (the ratio is clipped at 1 - clip_low > 0), "
                f"got {self.clip_low}."
            )
        if not (math.isfinite(self.kl_coef) and self.kl_coef >= 0):
            raise ConfigError(f"LightningRLConfig.kl_coef must be a finite number >= 0, got {self.kl_coef}.")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"LightningRLConfig.learning_rate must be a positive number, got {self.learning_rate}.")
        if self.max_grad_norm is not None and not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ConfigError(
                f"LightningRLConfig.max_grad_norm must be a positive number or None, got {self.max_grad_norm}."
            )
        if self.micro_batch_size < 1:
            raise ConfigError(f"LightningRLConfig.micro_batch_size must be at least 1, got {self.micro_batch_size}.")
        if self.micro_batch_tokens is not None and self.micro_batch_tokens < 1:
            raise ConfigError(
                f"LightningRLConfig.micro_batch_tokens must be at least 1 or None, got {self.micro_batch_tokens}."
            )
        _choice("precision", self.precision, Precision)
        if self.lora is not None and self.lora.adapter_per_agent and not _names(self.agents):
            raise ConfigError(
                "LightningRLConfig.agents must name the trained agents (a collection of names) when "
                f"lora.adapter_per_agent is set, since each gets its own adapter; got {self.agents!r}."
            )

    @property
    def trained_agent_names(self) -> list[str] | None:
        """The trained agents' names when ``agents`` lists them (sorted, one string counts as one name), else ``None``."""
        return _names(self.agents)


def _names(agents: AgentSelector) -> list[str] | None:
    if agents is None or callable(agents):
        return None
    names = sorted({agents} if isinstance(agents, str) else set(agents))
    return names or None


def _choice(name: str, value: object, choices: object) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        raise ConfigError(f"LightningRLConfig.{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}.")


def _finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value}.")
