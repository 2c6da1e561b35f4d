"""After a training step: new full weights (load_weights) and LoRA adapters (load_lora / unload_lora)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentlightning_engine import EngineError, VLLMEngine
from conftest import MODEL_NAME, TinyModels, chat, greedy_reference
from transformers import AutoModelForCausalLM


def ask(engine: VLLMEngine, model: str = MODEL_NAME) -> dict[str, Any]:
    response = httpx.post(f"{engine.url}/chat/completions", json=chat("Name a colour.", model=model), timeout=60)
    assert response.status_code == 200, response.text
    completion: dict[str, Any] = response.json()
    return completion


def answer(completion: dict[str, Any]) -> tuple[list[int], list[float]]:
    choice = completion["choices"][0]
    return choice["token_ids"], [entry["logprob"] for entry in choice["logprobs"]["content"]]


def assert_close(logprobs: list[float], expected: list[float]) -> None:
    assert max(abs(a - b) for a, b in zip(logprobs, expected, strict=True)) < 1e-3


@pytest.mark.usefixtures("restore_base_weights")
def test_load_weights_serves_the_new_checkpoint_from_the_next_request_on(
    engine: VLLMEngine, tiny_models: TinyModels
) -> None:
    before = ask(engine)
    version = engine.weights_version

    engine.load_weights(tiny_models.checkpoint)

    after = ask(engine)
    assert engine.weights_version == version + 1
    checkpoint = AutoModelForCausalLM.from_pretrained(tiny_models.checkpoint, dtype="float32")
    expected_ids, expected_logprobs = greedy_reference(checkpoint, after["prompt_token_ids"], 8)
    ids, logprobs = answer(after)
    assert ids == expected_ids != answer(before)[0]
    assert_close(logprobs, expected_logprobs)

    engine.load_weights(tiny_models.base)  # and back: the first answer again
    assert answer(ask(engine))[0] == answer(before)[0]


def test_load_weights_refuses_a_folder_without_weights_and_keeps_serving(engine: VLLMEngine, tmp_path: Path) -> None:
    version = engine.weights_version
    with pytest.raises(EngineError, match="save_pretrained"):
        engine.load_weights(tmp_path / "does-not-exist")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(EngineError, match=r"\*\.safetensors"):
        engine.load_weights(tmp_path)
    assert engine.weights_version == version
    assert len(answer(ask(engine))[0]) == 8


def test_a_lora_adapter_is_served_under_its_name_until_unloaded(
    engine: VLLMEngine, tiny_models: TinyModels, tmp_path: Path
) -> None:
    from peft import PeftModel

    base_answer = answer(ask(engine))[0]
    folder = tmp_path / "adapter"  # where the trainer saves the adapter after each step
    shutil.copytree(tiny_models.lora, folder)
    engine.load_lora("adapter", folder)
    try:
        assert engine.loras == {"adapter": str(folder.resolve())}
        names = [m["id"] for m in httpx.get(f"{engine.url}/models", timeout=10).json()["data"]]
        assert names == [MODEL_NAME, "adapter"]

        adapted = ask(engine, model="adapter")
        reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_models.base), folder)
        expected_ids, expected_logprobs = greedy_reference(reference, adapted["prompt_token_ids"], 8)
        ids, logprobs = answer(adapted)
        assert ids == expected_ids != base_answer
        assert_close(logprobs, expected_logprobs)
        assert answer(ask(engine))[0] == base_answer  # the base model is unchanged

        # the next training step overwrites the adapter in the same folder: same name, same path, new weights
        shutil.copytree(tiny_models.other_lora, folder, dirs_exist_ok=True)
        engine.load_lora("adapter", folder)
        reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_models.base), folder)
        expected_ids, _ = greedy_reference(reference, adapted["prompt_token_ids"], 8)
        assert answer(ask(engine, model="adapter"))[0] == expected_ids != ids
    finally:
        engine.unload_lora("adapter")

    assert engine.loras == {}
    response = httpx.post(f"{engine.url}/chat/completions", json=chat("Name a colour.", model="adapter"), timeout=60)
    assert response.status_code == 404
    with pytest.raises(EngineError, match="could not unload"):
        engine.unload_lora("adapter")


def test_load_lora_needs_an_adapter_folder(engine: VLLMEngine, tiny_models: TinyModels) -> None:
    with pytest.raises(EngineError, match=r"adapter_config\.json"):
        engine.load_lora("adapter", tiny_models.base)
    assert engine.loras == {}
