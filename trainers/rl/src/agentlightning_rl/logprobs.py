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
(a test checks it). Logits are taken at temperature 1, like the logprobs the engine reports, and the
``logsumexp`` is float32 even when the passes run under bfloat16 autocast (``LightningRLConfig.precision``).

**Shared prefixes.** The sequences of a micro-batch share a lot: a group's samples send the same prompt, every
prompt starts with the same system message, an agent's next call repeats its last call. Where the model's
attention takes a ready 4D mask (``sdpa``, ``eager``: :func:`takes_block_masks`), LightningRL makes micro-batches of
prefix trees (:mod:`agentlightning_rl.prefix_tree`, :func:`tree_logprobs`): every distinct prefix token once, under a mask that
gives it exactly its own context, so values and gradients equal separate passes' (tests check both) at the cost
of the distinct tokens only. Otherwise a micro-batch whose calls share a prompt (``share_prompts``) runs each
distinct prompt once with a key/value cache, repeated for every completion that then runs on top of it
(:func:`shared_prompt_logprobs`; the same result, ``P·L_prompt + B·L_completion`` tokens), and the others run as
padded rows (:func:`completion_logprobs`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any

import torch

from agentlightning_rl.batch import MicroBatch
from agentlightning_rl.prefix_tree import pack_prefix_trees

__all__ = [
    "batch_logprobs",
    "completion_logprobs",
    "naive_completion_logprobs",
    "shared_prompt_logprobs",
    "takes_block_masks",
    "tree_logprobs",
]


def batch_logprobs(model: Any, batch: MicroBatch) -> torch.Tensor:
    """``[N]``: the logprob of each completion token of ``batch`` under ``model``, in the batch's layout: prefix
    trees, shared prompts, or padded rows (module docstring)."""
    if batch.prefix_trees:
        return tree_logprobs(model, *_sequences(batch))
    shared = batch.shared_prompts
    if shared is None:
        return completion_logprobs(model, batch.input_ids, batch.attention_mask, batch.completion_mask)
    return shared_prompt_logprobs(
        model, shared.input_ids, shared.attention_mask, shared.row_prompt, batch.input_ids, batch.completion_mask
    )


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
        **_decoder_inputs(causal_lm, input_ids), attention_mask=attention_mask, use_cache=False
    ).last_hidden_state
    # The hidden state at j-1 predicts the token at j: gather only those, then apply the output layer.
    return _token_logprobs(causal_lm, hidden[predictors], input_ids[:, 1:][completion_mask[:, 1:]])


def shared_prompt_logprobs(
    model: Any,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    row_prompt: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
) -> torch.Tensor:
    """``[N]``: the logprob of each completion token, each distinct prompt run once, with a key/value cache
    (module docstring).

    ``prompt_ids`` / ``prompt_mask`` are ``[P, Lp]``, left-padded; ``row_prompt[b]`` is the prompt of completion row
    ``b``; ``completion_ids`` / ``completion_mask`` are ``[B, Lc]``, right-padded, True on real tokens. The result
    lists the tokens in the row-major order of ``completion_mask``.
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    _check_plain_logits(causal_lm)
    decoder = causal_lm.get_decoder()
    targets = completion_ids[completion_mask]
    prompt_positions = (prompt_mask.cumsum(dim=-1) - 1).clamp(min=0)
    prompt_pass = decoder(
        **_decoder_inputs(causal_lm, prompt_ids),
        attention_mask=prompt_mask,
        position_ids=prompt_positions,
        use_cache=True,
    )
    cache = prompt_pass.cache if "cache" in prompt_pass else prompt_pass.past_key_values
    # Indexing keeps the graph: each completion row gets its prompt's keys and values, and their gradient adds up.
    cache.batch_select_indices(row_prompt)
    lengths = prompt_mask.sum(dim=-1)[row_prompt]
    completion_positions = lengths[:, None] + torch.arange(completion_ids.shape[1], device=completion_ids.device)
    attention_mask = torch.cat([prompt_mask[row_prompt], completion_mask.to(prompt_mask.dtype)], dim=1)
    cache_argument = _cache_argument(type(decoder).forward)
    hidden = decoder(
        **_decoder_inputs(causal_lm, completion_ids),
        attention_mask=attention_mask,
        position_ids=completion_positions,
        use_cache=True,
        **{cache_argument: cache},
    ).last_hidden_state
    # The prompt's last state predicts the first completion token; completion state j-1 predicts token j.
    last_prompt_state = prompt_pass.last_hidden_state[:, -1][row_prompt]
    predictors = torch.cat([last_prompt_state[:, None], hidden[:, :-1]], dim=1)
    return _token_logprobs(causal_lm, predictors[completion_mask], targets)


def _decoder_inputs(causal_lm: Any, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The decoder's input for ``input_ids``: the ids themselves, or, where the input embedding is the output
    layer's weight (SmolLM2) and is trained, their embeddings looked up off the graph, with a hook that adds their
    gradient into the weight's ``.grad`` rows in place.

    Through autograd the two uses of the tied weight meet in one gradient buffer: a zero-filled vocabulary × hidden
    tensor (or, sparse, a copy of the output layer's dense gradient) per pass, about 0.1 s of SmolLM2-135M's 0.5 s
    of backward on a 256-token micro-batch. The sum, and so the gradient, are the same. Other embeddings (untied,
    frozen, a subclass that scales its output) take the ids.
    """
    embedding = causal_lm.get_input_embeddings()
    weight = embedding.weight
    tied = (
        type(embedding) is torch.nn.Embedding
        and weight.requires_grad
        and torch.is_grad_enabled()
        and embedding.max_norm is None
        and not embedding.scale_grad_by_freq
        and not embedding.sparse
        and weight is getattr(causal_lm.get_output_embeddings(), "weight", None)
    )
    if not tied:
        return {"input_ids": input_ids}
    embeds = torch.nn.functional.embedding(input_ids, weight.detach()).requires_grad_()
    padding_idx = embedding.padding_idx

    def add_rows(grad: torch.Tensor) -> torch.Tensor:
        rows = grad.reshape(-1, grad.shape[-1])
        ids = input_ids.reshape(-1)
        if padding_idx is not None:  # nn.Embedding gives its padding row no gradient
            rows = rows.masked_fill((ids == padding_idx)[:, None], 0.0)
        if weight.grad is None:
            weight.grad = torch.zeros_like(weight)
        weight.grad.index_add_(0, ids, rows.to(weight.grad.dtype))
        return grad

    embeds.register_hook(add_rows)  # type: ignore[no-untyped-call]
    return {"inputs_embeds": embeds}


def takes_block_masks(model: Any) -> bool:
    """Whether the model's attention takes a ready 4D mask as it is, as prefix trees need (transformers' ``sdpa``
    and ``eager`` do; flash-attention kernels take padding only)."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(causal_lm.config, "_attn_implementation", None) in ("sdpa", "eager")


def tree_logprobs(
    model: Any, sequences: Sequence[Sequence[int]], completion_starts: Sequence[int], *, max_row_tokens: int = 4096
) -> torch.Tensor:
    """``[N]``: the logprob of each completion token of ``sequences`` (prompt + completion token ids, the
    completion of sequence ``i`` from ``completion_starts[i]``), in sequence order then token order, every distinct
    prefix token run once (:mod:`agentlightning_rl.prefix_tree`; rows of at most ``max_row_tokens``).

    Raises:
        ValueError: the model's attention takes no 4D mask (only ``sdpa`` and ``eager`` do), or a completion starts
            at position 0.
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    _check_plain_logits(causal_lm)
    if not takes_block_masks(causal_lm):
        raise ValueError(
            f"Prefix trees need an attention that takes a 4D mask (sdpa or eager); this model uses "
            f"{getattr(causal_lm.config, '_attn_implementation', None)!r}."
        )
    device = next(causal_lm.parameters()).device
    trees = pack_prefix_trees(sequences, completion_starts, max_row_tokens=max_row_tokens, device=device)
    mask = torch.zeros(trees.allowed.shape, dtype=causal_lm.dtype, device=device)
    mask.masked_fill_(~trees.allowed, torch.finfo(causal_lm.dtype).min)
    hidden = causal_lm.get_decoder()(
        **_decoder_inputs(causal_lm, trees.input_ids),
        attention_mask=mask[:, None],
        position_ids=trees.positions,
        use_cache=False,
    ).last_hidden_state
    return _token_logprobs(causal_lm, hidden.flatten(0, 1)[trees.predictors], trees.targets)


def _sequences(batch: MicroBatch) -> tuple[list[list[int]], list[int]]:
    """Each row of a padded-rows ``batch`` as prompt + completion token ids, and where its completion starts."""
    lengths = batch.attention_mask.sum(dim=-1).tolist()
    completions = batch.completion_mask.sum(dim=-1).tolist()
    rows = [row[:n] for row, n in zip(batch.input_ids.tolist(), lengths, strict=True)]
    return rows, [n - c for n, c in zip(lengths, completions, strict=True)]


@functools.cache
def _cache_argument(forward: Any) -> str:
    # Recent transformers call `past_key_values` `cache` (and warn about the old name). Read once per decoder class.
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def _token_logprobs(causal_lm: Any, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log π(target | state)`` for ``[N, H]`` predicting states: the output layer on those states only."""
    logits = causal_lm.get_output_embeddings()(states).float()
    # Cross-entropy's fused log-softmax keeps one N × V tensor for the backward, as logsumexp would, in fewer
    # passes over it (SmolLM2, 176 tokens: 317 against 352 ms with the output layer, forward and backward).
    logprobs: torch.Tensor = -torch.nn.functional.cross_entropy(logits, targets, reduction="none")
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
