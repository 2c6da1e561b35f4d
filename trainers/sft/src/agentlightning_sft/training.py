"""Fine-tuning on the selected calls: token examples, the loss mask, and the optimizer steps.

Each selected LLM call is one :class:`TokenExample`: ``prompt_token_ids + completion_token_ids`` exactly as the
engine saw and produced them (the gateway recorded them; nothing is re-tokenized). The prompt holds everything
the model read (system and user turns, earlier assistant turns, tool outputs, rendered by the engine's chat
template); the completion is what the agent's model generated in that call (its text or tool calls, and the
end-of-turn token when it stopped). The loss is the mean negative log-likelihood of the completion tokens only::

    L = − (1 / N) Σ_{examples e} Σ_{t ∈ completion(e)} log π(x_t | x_<t)      N: completion tokens of the step

``labels`` carry ``-100`` (ignored) on every prompt and padding position, so prompts and tool outputs are never
trained on. A step's loss is weighted by the step's ``N``, not a micro-batch's, so accumulating micro-batches
gives exactly the gradient of one big batch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from agentlightning_sft.config import SFTConfig
from agentlightning_sft.selection import Candidate

__all__ = ["IGNORE_INDEX", "Batch", "FineTuneMetrics", "TokenExample", "collate", "fine_tune", "token_examples"]

#: The label of a position that is not trained on (torch's ``cross_entropy`` default ``ignore_index``).
IGNORE_INDEX = -100


@dataclass(frozen=True)
class TokenExample:
    """One selected LLM call as token ids."""

    prompt_token_ids: list[int]
    completion_token_ids: list[int]
    agent_name: str | None = None
    rollout_id: str | None = None


@dataclass(frozen=True)
class Batch:
    """Right-padded examples for one forward/backward pass: ``B`` rows of width ``L``."""

    #: ``[B, L]`` prompt + completion token ids.
    input_ids: torch.Tensor
    #: ``[B, L]`` 1 on real tokens, 0 on padding.
    attention_mask: torch.Tensor
    #: ``[B, L]`` the completion tokens' ids, :data:`IGNORE_INDEX` everywhere else.
    labels: torch.Tensor

    @property
    def num_tokens(self) -> int:
        """The completion tokens trained on."""
        return int((self.labels != IGNORE_INDEX).sum())


@dataclass(frozen=True)
class FineTuneMetrics:
    """What one iteration's fine-tuning did."""

    #: Mean completion-token loss over the steps (each step's loss is already a per-token mean).
    loss: float
    #: Completion tokens trained on (counted once per epoch), examples, optimizer steps.
    tokens: int
    examples: int
    steps: int
    #: The largest global gradient norm before clipping (``None`` when ``max_grad_norm`` is ``None``).
    grad_norm: float | None


def token_examples(candidates: Sequence[Candidate]) -> list[TokenExample]:
    """Every call of the candidates' trajectories that generated something, in order.

    Raises:
        agentlightning.MissingTokenIds: a call has no recorded token ids (it did not go through the gateway).
        ValueError: a call has an empty prompt (nothing predicts its first token).
    """
    examples: list[TokenExample] = []
    for candidate in candidates:
        for transition in candidate.trajectory.transitions:
            prompt, completion = transition.token_ids()
            if not completion:
                continue
            if not prompt:
                raise ValueError(f"LLM call {transition.span_id} has no prompt tokens: nothing predicts its output.")
            examples.append(
                TokenExample(list(prompt), list(completion), transition.agent_name, candidate.rollout.rollout_id)
            )
    return examples


def collate(examples: Sequence[TokenExample], pad_token_id: int = 0) -> Batch:
    """Right-pad ``examples`` into one batch whose labels mask everything but the completion tokens."""
    if not examples:
        raise ValueError("collate needs at least one example.")
    width = max(len(e.prompt_token_ids) + len(e.completion_token_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        prompt, completion = example.prompt_token_ids, example.completion_token_ids
        end = len(prompt) + len(completion)
        input_ids[row, :end] = torch.tensor(prompt + completion, dtype=torch.long)
        attention_mask[row, :end] = 1
        labels[row, len(prompt) : end] = torch.tensor(completion, dtype=torch.long)
    return Batch(input_ids, attention_mask, labels)


def completion_nll(model: Any, batch: Batch) -> torch.Tensor:
    """The summed negative log-likelihood of the batch's completion tokens (position ``t`` predicts ``t + 1``)."""
    device = next(model.parameters()).device
    logits = model(
        input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device), use_cache=False
    ).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        batch.labels[:, 1:].reshape(-1).to(device),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


def make_optimizer(model: torch.nn.Module, config: SFTConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (every weight, or the LoRA adapter's)."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("The model has no trainable parameters; is every weight frozen?")
    return torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=0.0)


def fine_tune(
    model: Any,
    optimizer: torch.optim.Optimizer,
    examples: Sequence[TokenExample],
    config: SFTConfig,
    *,
    pad_token_id: int = 0,
    rng: random.Random | None = None,
) -> FineTuneMetrics:
    """``config.epochs`` passes over ``examples`` (shuffled by ``rng`` each pass), one optimizer step per
    ``config.batch_size`` examples, micro-batches of ``config.micro_batch_size`` accumulated (module docstring).

    The model's train/eval mode is left as it is: an engine serving the same module keeps it in eval.
    """
    rng = rng or random.Random(0)
    losses: list[float] = []
    tokens = 0
    grad_norm: float | None = None
    for _ in range(config.epochs):
        order = list(examples)
        rng.shuffle(order)
        for start in range(0, len(order), config.batch_size):
            step = order[start : start + config.batch_size]
            step_tokens = sum(len(e.completion_token_ids) for e in step)
            if step_tokens == 0:
                continue
            optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for micro in range(0, len(step), config.micro_batch_size):
                loss = completion_nll(model, collate(step[micro : micro + config.micro_batch_size], pad_token_id))
                torch.autograd.backward(loss / step_tokens)
                step_loss += float(loss.detach()) / step_tokens
            if config.max_grad_norm is not None:
                parameters = [p for group in optimizer.param_groups for p in group["params"]]
                norm = float(torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm))
                grad_norm = norm if grad_norm is None else max(grad_norm, norm)
            optimizer.step()
            losses.append(step_loss)
            tokens += step_tokens
    optimizer.zero_grad(set_to_none=True)
    return FineTuneMetrics(
        loss=sum(losses) / len(losses) if losses else 0.0,
        tokens=tokens,
        examples=len(examples),
        steps=len(losses),
        grad_norm=grad_norm,
    )
