"""Generating under autocast (``autocast_dtype``): bfloat16 passes on the float32 weights, logprobs in float32,
and the live module's in-place updates still served."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from agentlightning_engine import TransformersEngine
from conftest import chat

BODY = chat("Tell me a story.", max_tokens=6, temperature=0, logprobs=True)


@pytest.fixture
def bf16_engine(tiny_model_dir: Path) -> Iterator[TransformersEngine]:
    with TransformersEngine(tiny_model_dir, autocast_dtype=torch.bfloat16) as engine:
        yield engine


async def first_logprob(engine: TransformersEngine) -> float:
    choice = (await engine.chat_completion(BODY)).choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    return choice.logprobs.content[0].logprob


async def test_bf16_generation_keeps_float32_weights_and_close_logprobs(
    bf16_engine: TransformersEngine, engine: TransformersEngine
) -> None:
    assert bf16_engine.autocast_dtype is torch.bfloat16 and engine.autocast_dtype is None
    mixed, exact = await first_logprob(bf16_engine), await first_logprob(engine)
    assert all(p.dtype == torch.float32 for p in bf16_engine.model.parameters())
    assert mixed != exact  # the passes did run in bfloat16
    # This random model's logits reach ~20, which the bfloat16 passes get wrong by up to ~0.4.
    assert mixed == pytest.approx(exact, abs=0.5)
    bf16_engine.autocast_dtype = None  # the next batch runs in the weights' dtype again
    assert await first_logprob(bf16_engine) == exact


async def test_bf16_generation_serves_weights_changed_in_place(bf16_engine: TransformersEngine) -> None:
    before = (await bf16_engine.chat_completion(BODY)).choices[0].token_ids
    embedding = bf16_engine.model.get_input_embeddings().weight
    with bf16_engine.paused(), torch.no_grad():
        embedding.mul_(-1.0)  # an optimizer step: no bfloat16 copy of the old weights may be served
    assert (await bf16_engine.chat_completion(BODY)).choices[0].token_ids != before
    with bf16_engine.paused(), torch.no_grad():
        embedding.mul_(-1.0)
    assert (await bf16_engine.chat_completion(BODY)).choices[0].token_ids == before
