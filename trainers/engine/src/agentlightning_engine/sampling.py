"""Choosing the next token of each row of a batch, each row with its own parameters and random generator."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SamplingParams", "sample_next_tokens"]


@dataclass(frozen=True)
class SamplingParams:
    """How one choice is generated. ``temperature == 0`` is greedy (argmax)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    stop_token_ids: frozenset[int] = frozenset()
    logprobs: bool = False
    top_logprobs: int = 0


def sample_next_tokens(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator]
) -> torch.Tensor:
    """One token id per row of ``logits`` (``[batch, vocab]``).

    A sampled row draws from ``softmax(logits / temperature)`` restricted to the smallest set of most likely
    tokens whose probabilities add up to at least ``top_p`` (nucleus sampling, Holtzman et al. 2020), with
    the row's own generator, so a seeded request gets the same tokens whatever else is in the batch (as long
    as the model computes the same logits for it).

    The draw is by inverse transform, for all sampled rows at once: each row's generator gives one uniform
    number ``u``, and the row's token is the first whose cumulative probability exceeds ``u`` times the row's
    total (a token of probability zero is never drawn). ``torch.multinomial`` per row took ~2 ms for a 49k-token
    vocabulary on a CPU, 30 times this.
    """
    chosen = logits.argmax(dim=-1)
    rows = [row for row, p in enumerate(params) if p.temperature != 0]
    if not rows:
        return chosen
    temperatures = torch.tensor([params[row].temperature for row in rows], device=logits.device)
    probs = torch.softmax(logits[rows].float() / temperatures[:, None], dim=-1)
    for index, row in enumerate(rows):
        if params[row].top_p < 1.0:
            probs[index] = _nucleus(probs[index], params[row].top_p)
    cumulative = probs.cumsum(dim=-1)
    total = cumulative[:, -1:]
    uniform = torch.stack([torch.rand((), generator=generators[row], device=generators[row].device) for row in rows])
    target = uniform[:, None] * total
    picks = torch.searchsorted(cumulative, target, right=True).squeeze(1)
    # u * total can round up to the total itself (about once in 2^24 draws): take the most likely token then.
    picks = torch.where(target.squeeze(1) < total.squeeze(1), picks, probs.argmax(dim=-1))
    chosen[rows] = picks
    return chosen


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """``probs`` with every token outside the nucleus set to zero: a token stays if the tokens more likely than
    it add up to less than ``top_p``."""
    sorted_probs, order = probs.sort(descending=True)
    keep = (sorted_probs.cumsum(dim=-1) - sorted_probs) < top_p
    return probs * torch.zeros_like(keep).scatter(0, order, keep)
