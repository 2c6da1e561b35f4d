"""The loss mask covers exactly the generated tokens; the loss is their mean NLL; fine-tuning lowers it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
import torch
from agentlightning_engine.testing import make_tiny_model
from agentlightning_sft import (
    IGNORE_INDEX,
    SFTConfig,
    TokenExample,
    collate,
    completion_nll,
    fine_tune,
    make_optimizer,
    read_candidates,
    token_examples,
)
from factories import finished_rollout, llm_call

import agentlightning as agl

VOCAB = 64


def _tiny() -> torch.nn.Module:
    return make_tiny_model(VOCAB, SimpleNamespace(bos_token_id=1, eos_token_id=2, pad_token_id=0), seed=0)


def test_labels_are_the_completion_tokens_and_ignore_prompt_and_padding() -> None:
    examples = [TokenExample([1, 5, 6, 7], [8, 9, 2]), TokenExample([1, 3], [4]), TokenExample([1, 10, 11], [12, 13])]

    batch = collate(examples, pad_token_id=0)

    assert batch.input_ids.tolist() == [[1, 5, 6, 7, 8, 9, 2], [1, 3, 4, 0, 0, 0, 0], [1, 10, 11, 12, 13, 0, 0]]
    assert batch.attention_mask.tolist() == [[1] * 7, [1] * 3 + [0] * 4, [1] * 5 + [0] * 2]
    trained = batch.labels != IGNORE_INDEX
    assert trained.tolist() == [
        [False] * 4 + [True] * 3,
        [False, False, True] + [False] * 4,
        [False] * 3 + [True, True, False, False],
    ]
    for row, example in enumerate(examples):
        assert batch.labels[row][trained[row]].tolist() == example.completion_token_ids
    assert batch.num_tokens == 6


def test_examples_of_a_multi_turn_call_train_only_what_that_call_generated() -> None:
    # The second call's prompt holds the first call's reply and a tool output; only its own reply is trained on.
    first = llm_call("a", prompt=[1, 20, 21], completion=[30, 31, 2])
    second = llm_call("a", prompt=[1, 20, 21, 30, 31, 2, 40, 41, 42], completion=[50, 2])

    async def read() -> list[TokenExample]:
        store = agl.InMemoryStore()
        rollout = await finished_rollout(store, "t", 1.0, [first, second])
        return token_examples(await read_candidates(store, [rollout]))

    examples = asyncio.run(read())
    batch = collate(examples)

    assert [batch.labels[i][batch.labels[i] != IGNORE_INDEX].tolist() for i in range(2)] == [[30, 31, 2], [50, 2]]
    assert (batch.labels[1, :9] == IGNORE_INDEX).all()  # prompt, earlier reply and tool output of call two


def test_loss_is_the_summed_nll_of_the_completion_tokens_only() -> None:
    model = _tiny()
    batch = collate([TokenExample([1, 5, 6], [7, 8]), TokenExample([1, 9], [10])])

    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=batch.input_ids).logits.float(), dim=-1)
    # Position t predicts token t + 1: the completion tokens at 3, 4 (row 0) and 2 (row 1).
    expected = -(logprobs[0, 2, 7] + logprobs[0, 3, 8] + logprobs[1, 1, 10])
    with torch.no_grad():
        assert float(completion_nll(model, batch)) == pytest.approx(float(expected), rel=1e-5)


def test_fine_tuning_raises_the_likelihood_of_the_selected_completions() -> None:
    torch.manual_seed(0)
    model = _tiny()
    examples = [TokenExample([1, 3 + i], [40, 41, 2]) for i in range(6)]
    config = SFTConfig(epochs=5, batch_size=4, micro_batch_size=2, learning_rate=1e-2)
    batch = collate(examples)
    with torch.no_grad():
        before = float(completion_nll(model, batch))

    metrics = fine_tune(model, make_optimizer(model, config), examples, config)

    with torch.no_grad():
        after = float(completion_nll(model, batch))
    assert after < before / 2, (before, after)
    assert (metrics.examples, metrics.steps, metrics.tokens) == (6, 10, 5 * 18)
    assert metrics.grad_norm is not None and metrics.grad_norm > 0


def test_calls_without_token_ids_are_refused_with_a_reason() -> None:
    call = llm_call("a", prompt=[1], completion=[2])
    del call["agentlightning.llm.prompt_token_ids"]

    async def read() -> list[TokenExample]:
        store = agl.InMemoryStore()
        rollout = await finished_rollout(store, "t", 1.0, [call])
        return token_examples(await read_candidates(store, [rollout]))

    with pytest.raises(agl.MissingTokenIds):
        asyncio.run(read())
