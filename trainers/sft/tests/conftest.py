"""A tiny random Llama with SmolLM2's tokenizer, served by a fresh TransformersEngine per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from agentlightning_engine import TransformersEngine
from agentlightning_engine.testing import save_tiny_model

# Every test talks to 127.0.0.1 only: the guard fails one that tries to reach another machine.
from agentlightning.testing import no_outbound_connections as no_outbound_connections


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama (hidden 64), random weights from seed 0, saved once for the session."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture
def engine(tiny_folder: Path) -> Iterator[TransformersEngine]:
    """Fresh weights for every test: training changes them in place."""
    with TransformersEngine(str(tiny_folder), served_model_name="tiny") as engine:
        yield engine
