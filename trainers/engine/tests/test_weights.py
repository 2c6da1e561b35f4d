"""Sharing weights with a trainer in the same process: the live module, in-place updates, load_weights."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from agentlightning_engine import EngineError, TransformersEngine
from conftest import chat, make_tiny_model

BODY = chat("Tell me a story.", max_tokens=12, temperature=0)


@pytest.fixture
def own_engine(tiny_model_dir: Path) -> Iterator[TransformersEngine]:
    """An engine of its own: these tests change its weights."""
    with TransformersEngine(tiny_model_dir) as engine:
        yield engine


async def answer(engine: TransformersEngine) -> list[int]:
    return (await engine.chat_completion(BODY)).choices[0].token_ids


async def test_engine_model_is_the_live_module(own_engine: TransformersEngine) -> None:
    before = await answer(own_engine)
    embedding = own_engine.model.get_input_embeddings().weight
    with own_engine.paused(), torch.no_grad():
        embedding.mul_(-1.0)  # what an optimizer step does: change the parameters in place
    assert await answer(own_engine) != before
    with own_engine.paused(), torch.no_grad():
        embedding.mul_(-1.0)
    assert await answer(own_engine) == before


async def test_load_weights_from_a_state_dict_and_from_a_folder(
    own_engine: TransformersEngine, tiny_model_dir: Path, tmp_path: Path
) -> None:
    module = own_engine.model
    parameter = next(module.parameters())
    original = await answer(own_engine)
    other = make_tiny_model(len(own_engine.tokenizer), own_engine.tokenizer, seed=1)
    other.save_pretrained(tmp_path / "other")
    own_engine.tokenizer.save_pretrained(tmp_path / "other")

    own_engine.load_weights(other.state_dict())
    assert own_engine.model is module and next(module.parameters()) is parameter  # copied in place
    assert own_engine.weights_version == 1
    changed = await answer(own_engine)
    assert changed != original
    with TransformersEngine(tmp_path / "other") as reference:
        assert await answer(reference) == changed

    own_engine.load_weights(tiny_model_dir)  # a save_pretrained folder (safetensors, tied lm_head left out)
    assert await answer(own_engine) == original
    assert own_engine.weights_version == 2


def test_load_weights_rejects_weights_of_another_model(own_engine: TransformersEngine, tmp_path: Path) -> None:
    state = own_engine.model.state_dict()
    with pytest.raises(EngineError, match="not in the model"):
        own_engine.load_weights({**state, "extra.weight": torch.zeros(1)})
    with pytest.raises(EngineError, match="lack"):
        own_engine.load_weights({k: v for k, v in state.items() if "layers.0." not in k})
    with pytest.raises(EngineError, match="do not fit"):
        own_engine.load_weights({**state, "model.norm.weight": torch.zeros(3)})
    with pytest.raises(EngineError, match=r"No \*\.safetensors"):
        own_engine.load_weights(tmp_path)


async def test_an_engine_can_serve_a_model_the_trainer_already_holds(engine: TransformersEngine) -> None:
    with TransformersEngine(engine.model, tokenizer=engine.tokenizer, served_model_name="shared") as shared:
        assert shared.model is engine.model
        assert await answer(shared) == await answer(engine)
