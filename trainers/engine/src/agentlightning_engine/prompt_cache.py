"""Prefilled prompts kept for reuse: a sequence whose prompt was prefilled lately starts from that prompt's key/value
cache and next-token logits instead of running the prompt through the model again.

RL asks for this: the ``group_size`` samples of a task send the very same first prompt, a few milliseconds apart,
and a request with ``n > 1`` has ``n`` sequences of one prompt. Prefill is most of a short completion's cost
(SmolLM2-135M on two CPU cores: 32 prompts of 40 tokens take about 2 s to prefill, 24 decoding steps of those
32 rows about 3 s), so 8 distinct prompts of 32 sequences cost a quarter of it.

Only whole prompts are matched (the same token ids and the same LoRA adapter), not shared prefixes. The cache is
bounded by the bytes it holds (least recently used prompts go first) and is emptied whenever the weights may
have changed: :meth:`~agentlightning_engine.TransformersEngine.paused`, ``load_weights``, ``serve_adapters`` and
a new ``autocast_dtype``, so a prompt is never served from weights that are no longer the model's.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

__all__ = ["PrefilledPrompt", "PromptCache", "PromptKey"]

#: The prompt's token ids and the LoRA adapter that prefilled it (``None``: the base weights).
PromptKey = tuple[tuple[int, ...], str | None]


@dataclass(frozen=True)
class PrefilledPrompt:
    """One prompt's key/value cache (per layer, ``[1, heads, length, head_dim]``, no padding) and the logits of
    its next token (``[vocab]``)."""

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    logits: torch.Tensor

    @property
    def length(self) -> int:
        return int(self.keys[0].shape[-2])

    @property
    def nbytes(self) -> int:
        tensors = (*self.keys, *self.values, self.logits)
        return sum(t.numel() * t.element_size() for t in tensors)


class PromptCache:
    """Least recently used prefilled prompts, at most ``max_bytes`` of tensors (0 keeps nothing)."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"The prompt cache size cannot be negative (got {max_bytes} bytes).")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[PromptKey, PrefilledPrompt] = OrderedDict()
        self._bytes = 0
        #: Sequences that started from a prompt prefilled for another sequence (in this batch or earlier).
        self.reused = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: PromptKey) -> PrefilledPrompt | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: PromptKey, entry: PrefilledPrompt) -> None:
        size = entry.nbytes
        if size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.nbytes
        self._entries[key] = entry
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.nbytes

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
