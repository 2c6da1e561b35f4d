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
    """
    chosen = logits.argmax(dim=-1)
    for row, (p, generator) in enumerate(zip(params, generators, strict=True)):
        if p.temperature == 0:
            continue
        probs = torch.softmax(logits[row].float() / p.temperature, dim=-1)
        if p.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            # Keep a token if the tokens more likely than it add up to less than top_p.
            keep = (sorted_probs.cumsum(dim=-1) - sorted_probs) < p.top_p
            sorted_probs = sorted_probs * keep
            pick = torch.multinomial(sorted_probs, 1, generator=generator)
            chosen[row] = order[pick[0]]
        else:
            chosen[row] = torch.multinomial(probs, 1, generator=generator)[0]
    return chosen
