"""Micro-batches: token layout, behaviour logprobs, aggregation weights, budgets, and refusals."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from agentlightning_rl import InvalidLogprobs, Sample, make_micro_batches
from factories import call

from agentlightning import MissingTokenIds


def sample(advantage: float, rollout: str, **fields: Any) -> Sample:
    return Sample(call(**fields), advantage, advantage, rollout, "g")


# Lengths 5, 4 and 3; rollout r1 has 2 + 3 completion tokens, r2 has 1.
A = sample(1.0, "r1", prompt=[5, 6, 7], completion=[8, 9], logprobs=[-0.1, -0.2])
B = sample(-1.0, "r1", prompt=[5], completion=[10, 11, 12], logprobs=[-1.0, -2.0, -3.0])
C = sample(0.5, "r2", prompt=[4, 4], completion=[3], logprobs=[-0.5])


def test_a_sequence_is_prompt_then_completion_right_padded_with_its_logprobs_and_advantage() -> None:
    (batch,) = make_micro_batches([A, B], "token", micro_batch_size=8, micro_batch_tokens=None, pad_token_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9], [5, 10, 11, 12, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert batch.completion_mask.tolist() == [[False, False, False, True, True], [False, True, True, True, False]]
    assert batch.input_ids[batch.completion_mask].tolist() == [8, 9, 10, 11, 12]
    assert batch.behaviour_logprobs.tolist() == pytest.approx([-0.1, -0.2, -1.0, -2.0, -3.0])
    assert batch.advantages.tolist() == [1.0, 1.0, -1.0, -1.0, -1.0]
    assert (batch.num_sequences, batch.num_tokens, batch.agent_name) == (2, 5, "agent")


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [
        ("token", [1 / 6] * 6),  # 1/N
        ("sequence", [1 / 6, 1 / 6, 1 / 9, 1 / 9, 1 / 9, 1 / 3]),  # 1/(S·n_s), S = 3
        ("rollout", [1 / 10] * 5 + [1 / 2]),  # 1/(R·n_r), R = 2, r1 has 5 tokens, r2 one
    ],
)
def test_aggregation_weights_come_from_the_whole_step_and_sum_to_one(aggregation: Any, expected: list[float]) -> None:
    batches = make_micro_batches([A, B, C], aggregation, micro_batch_size=1, micro_batch_tokens=None)
    assert len(batches) == 3
    by_completion = {tuple(b.input_ids[b.completion_mask].tolist()): b.weights.tolist() for b in batches}
    weights = by_completion[(8, 9)] + by_completion[(10, 11, 12)] + by_completion[(3,)]
    assert weights == pytest.approx(expected)
    assert sum(weights) == pytest.approx(1.0)


def test_micro_batches_respect_the_token_and_sequence_budgets() -> None:
    # Longest first: A (5) alone, since A + B would be 2 * 5 = 10 > 8 padded tokens; then B and C (2 * 4 = 8).
    batches = make_micro_batches([C, B, A], "token", micro_batch_size=8, micro_batch_tokens=8)
    assert [b.input_ids.shape for b in batches] == [torch.Size([1, 5]), torch.Size([2, 4])]
    assert all(b.input_ids.numel() <= 8 for b in batches)
    batches = make_micro_batches([C, B, A], "token", micro_batch_size=2, micro_batch_tokens=None)
    assert [b.num_sequences for b in batches] == [2, 1]


def test_a_sequence_longer_than_the_token_budget_is_a_micro_batch_of_its_own() -> None:
    batches = make_micro_batches([A, C], "token", micro_batch_size=8, micro_batch_tokens=2)
    assert [b.input_ids.shape for b in batches] == [torch.Size([1, 5]), torch.Size([1, 3])]


def test_prefix_tree_packs_keep_calls_that_share_a_prefix_together_and_count_distinct_tokens() -> None:
    first = sample(1.0, "r1", prompt=[5, 6, 7], completion=[8, 9], logprobs=[-0.1, -0.2])
    # r1's next call: its prompt is the first call, a tool's answer (20), the question again (6).
    second = sample(1.0, "r1", prompt=[5, 6, 7, 8, 9, 20, 6], completion=[21], logprobs=[-0.3])
    other = sample(-1.0, "r2", prompt=[5, 6, 11], completion=[12, 13], logprobs=[-1.0, -2.0])
    batches = make_micro_batches(
        [other, second, first], "token", micro_batch_size=2, micro_batch_tokens=None, prefix_trees=True
    )
    assert all(b.prefix_trees for b in batches)
    # In token order: r1's two calls (the first is a prefix of the second), then r2's.
    assert [b.input_ids[b.completion_mask].tolist() for b in batches] == [[8, 9, 21], [12, 13]]
    assert batches[0].behaviour_logprobs.tolist() == pytest.approx([-0.1, -0.2, -0.3])
    # A budget of distinct tokens: r1's two calls are 8 tokens together (16 padded), r2's adds 3 (it shares 5, 6).
    batches = make_micro_batches(
        [other, second, first], "token", micro_batch_size=8, micro_batch_tokens=8, prefix_trees=True
    )
    assert [b.num_sequences for b in batches] == [2, 1]
    batches = make_micro_batches(
        [other, second, first], "token", micro_batch_size=8, micro_batch_tokens=11, prefix_trees=True
    )
    assert [b.num_sequences for b in batches] == [3]


def test_a_micro_batch_never_mixes_agents() -> None:
    samples = [sample(1.0, "r1", agent="solver"), sample(1.0, "r1", agent="critic"), sample(1.0, "r2", agent="solver")]
    batches = make_micro_batches(samples, "token", micro_batch_size=8, micro_batch_tokens=None)
    assert sorted((b.agent_name, b.num_sequences) for b in batches) == [("critic", 1), ("solver", 2)]


def test_calls_without_completion_tokens_are_left_out() -> None:
    empty = sample(1.0, "r1", completion=[], logprobs=[])
    (batch,) = make_micro_batches([empty, C], "token", micro_batch_size=8, micro_batch_tokens=None)
    assert batch.num_sequences == 1 and batch.weights.tolist() == [1.0]
    assert make_micro_batches([empty], "token", micro_batch_size=8, micro_batch_tokens=None) == []


def test_calls_without_token_ids_are_refused() -> None:
    blind = Sample(call().model_copy(update={"completion_token_ids": None}), 1.0, 1.0, "r1", "g")
    with pytest.raises(MissingTokenIds, match="token ids"):
        make_micro_batches([A, blind], "token", micro_batch_size=8, micro_batch_tokens=None)


def test_calls_without_one_logprob_per_completion_token_are_refused() -> None:
    no_logprobs = Sample(call().model_copy(update={"logprobs": None}), 1.0, 1.0, "r1", "g")
    with pytest.raises(InvalidLogprobs, match="has no recorded logprobs"):
        make_micro_batches([no_logprobs], "token", micro_batch_size=8, micro_batch_tokens=None)
    short = sample(1.0, "r1", completion=[4, 5, 6], logprobs=[-1.0])
    with pytest.raises(InvalidLogprobs, match="1 logprobs for 3 completion tokens"):
        make_micro_batches([short], "token", micro_batch_size=8, micro_batch_tokens=None)


def test_calls_without_a_prompt_are_refused() -> None:
    with pytest.raises(ValueError, match="no prompt tokens"):
        make_micro_batches([sample(1.0, "r1", prompt=[])], "token", micro_batch_size=8, micro_batch_tokens=None)
