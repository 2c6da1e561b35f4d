"""vLLM reads Hugging Face folders: the default model, a GGUF file, is converted once into a cached folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from agentlightning_engine import ModelNotFound
from agentlightning_engine.model_folder import hf_model_folder
from agentlightning_engine.model_source import resolve_model
from conftest import TinyModels
from transformers import AutoModelForCausalLM, AutoTokenizer


def test_the_smollm2_gguf_is_converted_once_into_a_folder_with_the_same_weights(tmp_path: Path) -> None:
    folder = hf_model_folder("smollm2-135m", cache_dir=tmp_path)
    assert folder.parent == tmp_path
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no scratch folder left behind
    written = (folder / "model.safetensors").stat().st_mtime_ns
    assert hf_model_folder("smollm2-135m", cache_dir=tmp_path) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == written  # taken from the cache

    source = resolve_model("smollm2-135m")
    expected = AutoModelForCausalLM.from_pretrained(source.directory, gguf_file=source.gguf_file).state_dict()
    converted = AutoModelForCausalLM.from_pretrained(folder).state_dict()
    assert converted.keys() == expected.keys()
    assert all(torch.equal(converted[name], expected[name]) for name in expected)
    assert AutoTokenizer.from_pretrained(folder).chat_template is not None


def test_a_model_folder_is_used_as_it_is(tiny_models: TinyModels) -> None:
    assert hf_model_folder(str(tiny_models.base)) == tiny_models.base


def test_an_unknown_model_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="not downloaded"):
        hf_model_folder(str(tmp_path / "nothing"), cache_dir=tmp_path)
