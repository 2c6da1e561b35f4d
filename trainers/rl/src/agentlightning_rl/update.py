# The formulas are written in their papers' notation (Greek letters, ×, ℓ).
"""One optimizer step over the micro-batches of a training batch, with gradient accumulation.

Each micro-batch's loss is already weighted for the whole step (:mod:`agentlightning_rl.batch`), so its
``backward()`` adds exactly its share of the step's gradient::

    ∇L = ∇ Σ_k w_k ℓ_k = Σ_{micro-batches m} ∇ Σ_{k∈m} w_k ℓ_k

and accumulating any split of the step equals one pass over all of it, while memory holds one micro-batch's
activations at a time. Then the global gradient norm is clipped (``max_grad_norm``) and the optimizer steps.

With ``precision`` bf16 each pass runs under bfloat16 autocast; the gradients land on the float32 weights, and
clipping and the optimizer step stay float32 (:mod:`agentlightning_rl.precision`).

The model's train/eval mode is left as it is: an engine sharing the module keeps it in eval, and dropout
would make the new logprobs disagree with the behaviour policy's for reasons other than the update. Run the
step inside ``TransformersEngine.paused()`` when the engine serves the same module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from agentlightning_rl.agents import AgentAdapters
from agentlightning_rl.batch import MicroBatch
from agentlightning_rl.config import LightningRLConfig
from agentlightning_rl.logprobs import batch_logprobs
from agentlightning_rl.loss import LossMetrics, policy_loss
from agentlightning_rl.precision import autocast, autocast_dtype

__all__ = ["StepMetrics", "make_optimizer", "reference_logprobs", "train_step"]


@dataclass(frozen=True)
class StepMetrics:
    """What one optimizer step did; token metrics are means over the step's tokens."""

    loss: float
    tokens: int
    sequences: int
    micro_batches: int
    clip_fraction: float
    ratio_mean: float
    approx_kl: float
    reference_kl: float | None
    #: The global gradient norm before clipping (``None`` when ``max_grad_norm`` is ``None``).
    grad_norm: float | None


def make_optimizer(model: torch.nn.Module, config: LightningRLConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (all of them, or the LoRA adapters') at ``config.learning_rate``.

    With one adapter per agent, pass every adapter's parameters: peft leaves only the active adapter
    trainable, so collect them all whatever is active now.
    """
    parameters = [p for name, p in model.named_parameters() if p.requires_grad or "lora_" in name]
    if not parameters:
        raise ValueError("The model has no trainable parameters; is every weight frozen?")
    # torch's fused kernel updates each weight in one pass; on a CPU it is its only fast AdamW (SmolLM2-135M:
    # 0.2 s a step against 0.8 s for the default loop), the same update up to rounding.
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in parameters)
    return torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=0.0, fused=fused or None)


def reference_logprobs(model: Any, batch: MicroBatch, reference_model: Any = None) -> torch.Tensor:
    """``[N]`` completion logprobs under the frozen reference: ``reference_model`` if given, else the peft
    ``model`` with its adapters disabled (the base weights LoRA leaves untouched). Runs in the caller's autocast."""
    with torch.no_grad():
        if reference_model is not None:
            return batch_logprobs(reference_model, batch)
        if hasattr(model, "disable_adapter"):
            with model.disable_adapter():
                return batch_logprobs(model, batch)
    raise ValueError(
        "kl_coef > 0 needs a frozen reference model: pass reference_model= (a frozen copy of the initial weights) "
        "when training every weight; with LoRA the base model serves as the reference."
    )


def train_step(
    model: Any,
    optimizer: torch.optim.Optimizer,
    micro_batches: Sequence[MicroBatch],
    config: LightningRLConfig,
    *,
    adapters: AgentAdapters | None = None,
    reference_model: Any = None,
) -> StepMetrics:
    """Accumulate the gradient of every micro-batch, clip, and take one optimizer step.

    ``model`` is the causal LM (or ``adapters.model``); with ``adapters``, each micro-batch runs with its
    agent's adapter active. ``micro_batches`` must be all those of the step
    (:func:`~agentlightning_rl.batch.make_micro_batches` over the step's samples), since their weights sum
    to 1 only together.
    """
    device = next(model.parameters()).device
    dtype = autocast_dtype(config.precision, device)
    optimizer.zero_grad(set_to_none=True)
    total_loss = 0.0
    parts: list[LossMetrics] = []
    for batch in micro_batches:
        batch = batch.to(device)
        if adapters is not None:
            adapters.activate(batch.agent_name)
        # One autocast per pass, as torch recommends: its cache of bfloat16 weights lives for one pass only.
        with autocast(dtype, device):
            reference = reference_logprobs(model, batch, reference_model) if config.kl_coef > 0 else None
            new = batch_logprobs(model, batch)
        loss, metrics = policy_loss(
            new,
            batch.behaviour_logprobs,
            batch.advantages,
            batch.weights,
            clip_low=config.clip_low,
            clip_high=config.clip_high,
            kl_coef=config.kl_coef,
            reference_logprobs=reference,
        )
        torch.autograd.backward(loss)
        total_loss += float(loss.detach())
        parts.append(metrics)
    grad_norm: float | None = None
    if config.max_grad_norm is not None:
        parameters = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm))
    optimizer.step()
    return StepMetrics(
        loss=total_loss,
        tokens=sum(m.tokens for m in parts),
        sequences=sum(b.num_sequences for b in micro_batches),
        micro_batches=len(micro_batches),
        clip_fraction=_token_mean(parts, lambda m: m.clip_fraction),
        ratio_mean=_token_mean(parts, lambda m: m.ratio_mean),
        approx_kl=_token_mean(parts, lambda m: m.approx_kl),
        reference_kl=_token_mean(parts, lambda m: m.reference_kl or 0.0) if config.kl_coef > 0 else None,
        grad_norm=grad_norm,
    )


def _token_mean(parts: list[LossMetrics], value: Callable[[LossMetrics], float]) -> float:
    tokens = sum(m.tokens for m in parts)
    return sum(value(m) * m.tokens for m in parts) / tokens if tokens else 0.0
