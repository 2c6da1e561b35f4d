"""A tiny randomly initialised Llama (fixed seed) with SmolLM2's tokenizer and chat template, served on 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from agentlightning_engine import EngineServer, TransformersEngine
from agentlightning_engine.model_source import resolve_model
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real_model: loads the real SmolLM2-135M GGUF (about 20 s on a CPU)")


def make_tiny_model(vocab_size: int, tokenizer: Any, seed: int) -> LlamaForCausalLM:
    """A 2-layer Llama with random weights. A large init range makes its next-token distributions peaked and
    varied (greedy output is a varied string of tokens, not one token repeated) and far from ties, so batched
    and unbatched runs pick the same tokens."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=0.5,
    )
    return LlamaForCausalLM(config)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A save_pretrained folder: tiny random model + SmolLM2's tokenizer (taken from the GGUF file)."""
    source = resolve_model("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(source.directory, gguf_file=source.gguf_file)
    folder = tmp_path_factory.mktemp("tiny-llama")
    make_tiny_model(len(tokenizer), tokenizer, seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def engine(tiny_model_dir: Path) -> Iterator[TransformersEngine]:
    with TransformersEngine(tiny_model_dir, served_model_name="tiny") as engine:
        yield engine


@pytest.fixture(scope="session")
def server(engine: TransformersEngine) -> Iterator[EngineServer]:
    with engine.serve(port=0) as server:
        yield server


def chat(content: str, **params: Any) -> dict[str, Any]:
    """A chat-completions body with one user message."""
    return {"model": "tiny", "messages": [{"role": "user", "content": content}], **params}
