"""Choosing next tokens: each row from its own distribution and generator, greedy at temperature 0."""

from __future__ import annotations

import torch
from agentlightning_engine.sampling import SamplingParams, sample_next_tokens

LOGITS = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0]))  # the last token can never be drawn


def _draws(params: SamplingParams, seed: int, count: int, logits: torch.Tensor = LOGITS) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    rows = logits.expand(count, -1)
    return sample_next_tokens(rows, [params] * count, [generator] * count)


def test_sampled_tokens_follow_the_softmax_and_never_an_impossible_one() -> None:
    draws = _draws(SamplingParams(max_tokens=1), seed=0, count=40_000)
    frequencies = torch.bincount(draws, minlength=5).float() / len(draws)
    assert frequencies[4] == 0
    assert torch.allclose(frequencies[:4], torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.01), frequencies


def test_temperature_sharpens_top_p_cuts_the_tail_and_zero_is_greedy() -> None:
    cold = torch.bincount(_draws(SamplingParams(max_tokens=1, temperature=0.25), 1, 20_000), minlength=5)
    assert cold[3] / cold.sum() > 0.6  # (0.4^4 / Σ p^4 = 0.72)
    nucleus = torch.bincount(_draws(SamplingParams(max_tokens=1, top_p=0.5), 2, 20_000), minlength=5)
    assert nucleus[:2].sum() == 0 and nucleus[2] > 0 and nucleus[3] > 0  # 0.4 + 0.3 >= 0.5: the rest is out
    assert set(_draws(SamplingParams(max_tokens=1, temperature=0), 3, 50).tolist()) == {3}


def test_a_rows_tokens_depend_on_its_own_generator_only() -> None:
    params = SamplingParams(max_tokens=1)
    other = torch.randn(5)
    alone = [sample_next_tokens(LOGITS[None], [params], [g]) for g in [torch.Generator().manual_seed(7)] * 20]
    mine, theirs = torch.Generator().manual_seed(7), torch.Generator().manual_seed(8)
    together = [
        sample_next_tokens(torch.stack([other, LOGITS]), [params, params], [theirs, mine])[1] for _ in range(20)
    ]
    assert [int(t) for t in alone] == [int(t) for t in together]
