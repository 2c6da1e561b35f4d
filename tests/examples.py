"""What the examples' tests share: loading an example's modules (the examples are folders of scripts, not packages),
and a tiny Llama taught a few replies, on which an example's train.py runs in seconds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(example: str, name: str) -> ModuleType:
    """``examples/<example>/<name>.py``, imported once under a name of its own (``<example>_example_<name>``)."""
    module_name = f"{example}_example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / example / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def tiny_llama(tokenizer: Any) -> LlamaForCausalLM:
    """A 2-layer Llama (hidden size 64) with SmolLM2's vocabulary and a small init, which learns a reply in a few
    dozen steps (``make_tiny_model``'s large init, made for varied random text, takes several times longer)."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
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
        initializer_range=0.02,
    )
    return LlamaForCausalLM(config)


def teach(model: LlamaForCausalLM, tokenizer: Any, lessons: list[tuple[str, str]], max_loss: float = 0.5) -> None:
    """Train ``model`` until it says each lesson's reply after its prompt, greedily: no reply token's loss above
    ``max_loss``. Sampled, it still strays now and then, which gives a training step rewards that differ."""
    rows = [
        (
            tokenizer(prompt, add_special_tokens=False)["input_ids"],
            tokenizer(reply, add_special_tokens=False)["input_ids"],
        )
        for prompt, reply in lessons
    ]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(300):
        optimizer.zero_grad()
        worst = 0.0
        for prompt, reply in rows:
            # Only the reply's positions go through the output layer: 49,152 logits per prompt token would be slow.
            logits = model(input_ids=torch.tensor([prompt + reply]), logits_to_keep=len(reply) + 1).logits[0, :-1]
            losses = torch.nn.functional.cross_entropy(logits, torch.tensor(reply), reduction="none")
            (losses.mean() / len(rows)).backward()
            worst = max(worst, losses.max().item())
        if worst < max_loss:
            break
        optimizer.step()
    else:
        raise AssertionError(f"the tiny model did not learn its replies (worst token loss {worst:.2f})")
    model.eval()
