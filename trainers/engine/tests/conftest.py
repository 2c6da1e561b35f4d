"""A tiny randomly initialised Llama (fixed seed) with SmolLM2's tokenizer and chat template, served on 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agentlightning_engine import EngineServer, TransformersEngine
from agentlightning_engine.testing import make_tiny_model as make_tiny_model  # re-exported for the tests
from agentlightning_engine.testing import save_tiny_model


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real_model: loads the real SmolLM2-135M GGUF (about 20 s on a CPU)")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A save_pretrained folder: tiny random model + SmolLM2's tokenizer (taken from the GGUF file)."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), seed=0)


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
