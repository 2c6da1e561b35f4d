"""A tiny random Llama for the tests that run a model."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from agentlightning_engine.testing import make_tiny_model

#: Small enough that a forward and backward pass takes milliseconds on a busy CPU.
VOCAB = 256


@pytest.fixture
def tiny_model() -> Any:
    """A 2-layer Llama (hidden 64) over a 256-token vocabulary, random weights from seed 0."""
    tokenizer = SimpleNamespace(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    return make_tiny_model(VOCAB, tokenizer, seed=0)
