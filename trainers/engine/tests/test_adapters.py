"""LoRA adapters served next to the base model, each under its own model name, in shared batches."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import peft
import pytest
import torch
from agentlightning_engine import EngineError, TransformersEngine
from conftest import chat, make_tiny_model


def body(model: str, content: str = "Tell me a story.") -> dict[str, Any]:
    return {**chat(content, max_tokens=10, temperature=0, logprobs=True), "model": model}


@pytest.fixture
def adapted(tiny_model_dir: Path) -> Iterator[tuple[TransformersEngine, Any]]:
    """An engine of its own whose model carries two LoRA adapters with random (non-zero) weights."""
    with TransformersEngine(tiny_model_dir, served_model_name="tiny") as engine:
        torch.manual_seed(0)
        # init_lora_weights=False: B is random too, so each adapter changes what the model says.
        config = peft.LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        model = peft.get_peft_model(engine.model, config, adapter_name="writer")
        model.add_adapter("checker", config)
        model.eval()
        yield engine, model


async def answer(engine: TransformersEngine, model: str, content: str = "Tell me a story.") -> list[int]:
    completion = await engine.chat_completion(body(model, content))
    assert completion.model == model
    return completion.choices[0].token_ids


async def test_each_model_name_generates_with_its_adapter_in_one_batch(
    adapted: tuple[TransformersEngine, Any],
) -> None:
    engine, model = adapted
    with model.disable_adapter():
        base = await answer(engine, "tiny")
    engine.serve_adapters(model, {"tiny@writer": "writer", "tiny@checker": "checker"})
    alone = {name: await answer(engine, name) for name in ("tiny", "tiny@writer", "tiny@checker")}
    assert alone["tiny"] == base  # the base model's name: no adapter, whichever one peft has active
    assert alone["tiny@writer"] != base and alone["tiny@checker"] != base
    assert alone["tiny@writer"] != alone["tiny@checker"]

    sequences_before = engine.statistics.sequences
    names = ["tiny", "tiny@writer", "tiny@checker"] * 3
    together = await asyncio.gather(*(answer(engine, name) for name in names))
    assert engine.statistics.sequences - sequences_before == len(names)
    assert engine.statistics.largest_batch > 1  # they did share batches
    for name, tokens in zip(names, together, strict=True):
        assert tokens == alone[name], name


async def test_adapters_are_listed_and_served_over_http(adapted: tuple[TransformersEngine, Any]) -> None:
    engine, model = adapted
    engine.serve_adapters(model, {"tiny@writer": "writer"})
    assert engine.adapters == {"tiny@writer": "writer"}
    with engine.serve(port=0) as server:
        async with httpx.AsyncClient() as client:
            models = (await client.get(f"{server.url}/models")).json()["data"]
            assert [m["id"] for m in models] == ["tiny", "tiny@writer"]
            assert models[1]["parent"] == "tiny"
            reply = (await client.post(f"{server.url}/chat/completions", json=body("tiny@writer"))).json()
    assert reply["model"] == "tiny@writer"
    assert reply["choices"][0]["token_ids"] == await answer(engine, "tiny@writer")


async def test_training_an_adapter_in_place_changes_only_its_own_model_name(
    adapted: tuple[TransformersEngine, Any],
) -> None:
    engine, model = adapted
    engine.serve_adapters(model, {"tiny@writer": "writer", "tiny@checker": "checker"})
    before = {name: await answer(engine, name) for name in ("tiny", "tiny@writer", "tiny@checker")}
    with engine.paused(), torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B.writer" in name:
                parameter.mul_(-3.0)
    after = {name: await answer(engine, name) for name in ("tiny", "tiny@writer", "tiny@checker")}
    assert after["tiny@writer"] != before["tiny@writer"]
    assert after["tiny"] == before["tiny"] and after["tiny@checker"] == before["tiny@checker"]


async def test_serve_adapters_refuses_what_it_cannot_serve(adapted: tuple[TransformersEngine, Any]) -> None:
    engine, model = adapted
    with pytest.raises(EngineError, match="no adapter named \\['critic'\\]"):
        engine.serve_adapters(model, {"tiny@critic": "critic"})
    with pytest.raises(EngineError, match="base model's name"):
        engine.serve_adapters(model, {"tiny": "writer"})
    other = make_tiny_model(len(engine.tokenizer), engine.tokenizer, seed=1)
    foreign = peft.get_peft_model(other, peft.LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(EngineError, match="wraps another module"):
        engine.serve_adapters(foreign, {"tiny@x": "default"})
    assert engine.adapters == {}
