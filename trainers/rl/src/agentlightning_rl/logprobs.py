# The formulas are written in their papers' notation (Greek letters, ×, ℓ).
"""Per-token logprobs of the completion tokens under a Hugging Face causal LM, computing the output layer only
where it is needed.

The naive way, ``log_softmax(model(input_ids).logits)``, materialises ``B × L × V`` logits: with SmolLM2's
49,152-token vocabulary that is 200 KB per position in float32, for every prompt position too, and it is what
made memory peak at 8–10 GB for 32 sequences in an earlier experiment. Here the decoder gives the hidden
states ``h`` (``B × L × H``, H = 576 for SmolLM2-135M), the states that predict a completion token are
gathered, and only those ``N`` go through the output layer::

    log π(y_j | x, y_<j) = (W h_{j-1})[y_j] - logsumexp(W h_{j-1})        for each completion position j

so the ``N × V`` logits scale with the completion tokens only. The result equals the naive computation
(a test checks it). Logits are taken at temperature 1, like the logprobs the engine reports.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["completion_logprobs", "naive_completion_logprobs"]


def completion_logprobs(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor
) -> torch.Tensor:
    """``[N]``: the logprob of each completion token (``completion_mask`` True) under ``model``, in the
    row-major order of ``completion_mask``. ``model`` is a causal LM (``get_decoder()`` +
    ``get_output_embeddings()``), or a peft model wrapping one (its active adapter is used).

    Raises:
        ValueError: a completion token is at position 0 (nothing predicts it), or the model post-processes
            its logits (softcapping, scaling), which the output layer alone would miss.
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    _check_plain_logits(causal_lm)
    predictors = _predictor_mask(completion_mask)
    hidden = causal_lm.get_decoder()(
        input_ids=input_ids, attention_mask=attention_mask, use_cache=False
    ).last_hidden_state
    # The hidden state at j-1 predicts the token at j: gather only those, then apply the output layer.
    logits = causal_lm.get_output_embeddings()(hidden[predictors]).float()
    targets = input_ids[:, 1:][completion_mask[:, 1:]]
    # logsumexp instead of log_softmax: no second N × V tensor.
    logprobs: torch.Tensor = logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return logprobs


def naive_completion_logprobs(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor
) -> torch.Tensor:
    """The same as :func:`completion_logprobs` through the full ``B × L × V`` logits (for tests and checks)."""
    predictors = _predictor_mask(completion_mask)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits.float()
    logprobs = torch.log_softmax(logits, dim=-1)
    targets = input_ids[:, 1:][completion_mask[:, 1:]]
    return logprobs[predictors].gather(-1, targets[:, None]).squeeze(-1)


def _predictor_mask(completion_mask: torch.Tensor) -> torch.Tensor:
    """``[B, L]``: True at ``j-1`` for every completion position ``j``."""
    if bool(completion_mask[:, 0].any()):
        raise ValueError("A completion token is at position 0: nothing predicts it. Every call needs a prompt.")
    predictors = torch.zeros_like(completion_mask)
    predictors[:, :-1] = completion_mask[:, 1:]
    return predictors


def _check_plain_logits(causal_lm: Any) -> None:
    config = getattr(causal_lm, "config", None)
    for name in ("final_logit_softcapping", "logit_scale"):
        if getattr(config, name, None) not in (None, 1, 1.0):
            raise ValueError(
                f"{type(causal_lm).__name__} post-processes its logits ({name}={getattr(config, name)}), which "
                "completion_logprobs does not reproduce; its logprobs would not match the engine's."
            )
