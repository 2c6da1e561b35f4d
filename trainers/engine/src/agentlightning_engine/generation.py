"""Generating sequences together: a left-padded prefill, then one decoding step per token for the whole batch.

Each sequence is one choice of a request. Rows leave the batch (and the KV cache) as they finish, and new
sequences join it between two steps: they are prefilled on their own, and their KV cache is stacked onto
the running one with left padding (continuous batching at step granularity, without paged attention). A prompt
is prefilled once for all the sequences that send it, in one batch or a little later
(:mod:`agentlightning_engine.prompt_cache`). The weights are read under a lock taken for each forward pass, which
is what lets :meth:`TransformersEngine.paused` change them between two steps.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch

from agentlightning_engine.prompt_cache import PrefilledPrompt, PromptCache, PromptKey
from agentlightning_engine.protocol import FinishReason, TokenLogprob, TopLogprob
from agentlightning_engine.sampling import SamplingParams, sample_next_tokens
from agentlightning_engine.text import ChoiceText

__all__ = ["Sequence", "Progress", "BatchGenerator"]

log = logging.getLogger("agentlightning_engine")

# peft's name for "no adapter" in a mixed-adapter batch.
_BASE_ADAPTER = "__base__"


@dataclass(frozen=True)
class Progress:
    """What a sequence gained since the last report: new tokens (streamable ones only, when streaming), their
    text and logprobs; ``finish_reason`` (or ``error``) on the last report."""

    token_ids: list[int]
    text: str
    logprobs: list[TokenLogprob]
    finish_reason: FinishReason | None = None
    error: BaseException | None = None


@dataclass(eq=False)
class Sequence:
    """One choice being generated. ``report`` is called from the generation thread."""

    prompt_token_ids: list[int]
    params: SamplingParams
    text: ChoiceText
    generator: torch.Generator
    report: Callable[[Progress], None]
    stream: bool = False
    #: The LoRA adapter to generate with (see :meth:`BatchGenerator.serve_adapters`); ``None``: the base model.
    adapter: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    #: Set by the requester (any thread) when nobody waits for the answer any more.
    cancelled: bool = False
    _reported_logprobs: int = 0

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def finish(self, reason: FinishReason) -> None:
        self.finish_reason = reason
        ids, text = self.text.take_rest()
        self._send(ids, text, reason)

    def fail(self, error: BaseException) -> None:
        self.finish_reason = "abort"
        self._safe_report(Progress([], "", [], "abort", error))

    def report_streamable(self) -> None:
        ids, text = self.text.take_streamable()
        if ids:
            self._send(ids, text, None)

    def _send(self, ids: list[int], text: str, reason: FinishReason | None) -> None:
        # Logprobs of tokens a stop string cut off are dropped with them.
        del self.logprobs[len(self.text.token_ids) :]
        logprobs = self.logprobs[self._reported_logprobs : self._reported_logprobs + len(ids)]
        self._reported_logprobs += len(logprobs)
        self._safe_report(Progress(ids, text, logprobs, reason))

    def _safe_report(self, progress: Progress) -> None:
        try:
            self.report(progress)
        except RuntimeError:  # the requester's event loop is gone: nobody is listening
            self.cancelled = True


@dataclass
class _Rows:
    """The sequences being generated together, their KV cache, attention mask (``[rows, cached tokens]``), the
    position of each row's last token, and each row's logits for its next token."""

    sequences: list[Sequence]
    cache: Any
    attention_mask: torch.Tensor
    positions: torch.Tensor
    logits: torch.Tensor

    @property
    def size(self) -> int:
        return len(self.sequences)


def _can_merge(cache: Any) -> bool:
    """Whether rows can be added to ``cache``: only plain growing key/value layers (``DynamicLayer``, in
    transformers 4.56 and later, or ours) are merged; sliding-window, quantized or older caches are left alone."""
    layers = getattr(cache, "layers", None) or []
    return bool(layers) and all(
        type(layer).__name__ in ("DynamicLayer", "RoomyLayer")
        and isinstance(getattr(layer, "keys", None), torch.Tensor)
        for layer in layers
    )


#: Tokens of room a cache layer keeps past its length: a decoding step writes its token into that room.
CACHE_ROOM = 64


def _new_cache() -> Any:
    """An empty ``DynamicCache`` whose plain layers, made as the model's forward pass fills them, are
    :func:`_roomy_layer_class` layers (a model whose config asks for other layers, e.g. sliding windows, still
    gets those)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    if getattr(cache, "layer_class_to_replicate", None) is not None:
        cache.layer_class_to_replicate = _roomy_layer_class()
    return cache


@lru_cache(maxsize=1)
def _roomy_layer_class() -> type:
    """``DynamicLayer`` with room to grow: its keys and values are views of buffers ``CACHE_ROOM`` tokens longer,
    so appending a token writes it in place instead of copying the whole layer (``torch.cat``) as
    ``DynamicLayer`` does at every step (SmolLM2-135M, 16 rows of 800-token prompts: 139-164 ms a step instead of
    177-193; 32 rows of 40 tokens: about 3 % less). When the keys were replaced from outside (rows dropped or
    merged), the next append copies them into a new buffer once."""
    from transformers.cache_utils import DynamicLayer

    class RoomyLayer(DynamicLayer):  # type: ignore[no-untyped-call]
        _keys: torch.Tensor | None = None  # the views handed out last; anything else was set from outside
        _values: torch.Tensor | None = None
        _capacity = 0

        def update(
            self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
        ) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            keys, values = self.keys, self.values
            assert keys is not None and values is not None
            length = keys.shape[-2] if keys.numel() else 0
            end = length + key_states.shape[-2]
            if keys is not self._keys or values is not self._values or end > self._capacity:
                self._key_buffer = self._grown(keys, key_states, length, end)
                self._value_buffer = self._grown(values, value_states, length, end)
                self._capacity = end + CACHE_ROOM
            self._key_buffer[:, :, length:end] = key_states
            self._value_buffer[:, :, length:end] = value_states
            self.keys = self._keys = self._key_buffer[:, :, :end]
            self.values = self._values = self._value_buffer[:, :, :end]
            return self.keys, self.values

        @staticmethod
        def _grown(current: torch.Tensor, new: torch.Tensor, length: int, end: int) -> torch.Tensor:
            shape = list(new.shape)
            shape[-2] = end + CACHE_ROOM
            buffer = new.new_empty(shape)
            if length:
                buffer[:, :, :length] = current
            return buffer

    return RoomyLayer


def _left_pad(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """Zeros before ``tensor`` along ``dim`` up to ``width`` (zeros are masked out, so their value is moot)."""
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _merge(running: _Rows, newcomers: _Rows) -> _Rows:
    """One batch of both: caches and masks left-padded to the same length, then stacked.

    Positions are per row and the padding is masked, so each row attends to exactly what it did before.
    """
    width = max(running.attention_mask.shape[1], newcomers.attention_mask.shape[1])
    for mine, theirs in zip(running.cache.layers, newcomers.cache.layers, strict=True):
        mine.keys = torch.cat([_left_pad(mine.keys, width, -2), _left_pad(theirs.keys, width, -2)])
        mine.values = torch.cat([_left_pad(mine.values, width, -2), _left_pad(theirs.values, width, -2)])
    return _Rows(
        running.sequences + newcomers.sequences,
        running.cache,
        torch.cat([_left_pad(running.attention_mask, width, 1), _left_pad(newcomers.attention_mask, width, 1)]),
        torch.cat([running.positions, newcomers.positions]),
        torch.cat([running.logits, newcomers.logits]),
    )


class BatchGenerator:
    """Runs batches of sequences through a causal LM with a KV cache."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        eos_token_ids: set[int],
        pad_token_id: int,
        *,
        prompt_cache_bytes: int = 256 << 20,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos_token_ids = frozenset(eos_token_ids)
        self.pad_token_id = pad_token_id
        #: Held for every forward pass; whoever holds it may change the weights.
        self.lock = threading.RLock()
        parameters = inspect.signature(model.forward).parameters
        self._keep_last_logits: dict[str, int] = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}
        # Recent transformers call `past_key_values` `cache` (and warn about the old name).
        self._cache_argument = "cache" if "cache" in parameters else "past_key_values"
        # With adapters served, forward passes go through the peft model wrapped around ``model``.
        self._adapter_model: Any = None
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        self._byte_level = "ByteLevel" in repr(decoder)
        self.token_info = lru_cache(maxsize=65536)(self._token_info)
        #: Prompts prefilled lately; empty it (under :attr:`lock`) whenever the weights change.
        self.prompts = PromptCache(prompt_cache_bytes)
        # Whether this model's cache is made of plain key/value layers that can be cut per row and stacked again;
        # None until the first prefill tells.
        self._reusable_cache: bool | None = None
        #: Prompt tokens not run because another prompt prefilled with them began with the same ones.
        self.prefix_tokens_shared = 0

    def _token_info(self, token_id: int) -> tuple[str, list[int]]:
        """A token's text and bytes, as OpenAI's logprobs show them."""
        raw = self.tokenizer.convert_ids_to_tokens(token_id)
        data = _byte_level_bytes(raw) if self._byte_level and isinstance(raw, str) else None
        text = self.tokenizer.decode([token_id], skip_special_tokens=False)
        if data is None:
            data = text.encode("utf-8")
        return text, list(data)

    def serve_adapters(self, peft_model: Any) -> None:
        """Run forward passes through ``peft_model`` (a peft model wrapped around :attr:`model`), each row with its
        sequence's adapter (``Sequence.adapter``; the base weights alone for ``None``): peft's mixed-adapter
        batches, so sequences of different adapters still share one batch. ``None`` goes back to :attr:`model`."""
        with self.lock:
            self._adapter_model = peft_model

    def _forward(self, cache: Any, sequences: list[Sequence], **inputs: Any) -> torch.Tensor:
        inputs[self._cache_argument] = cache
        with self.lock:
            if self._adapter_model is not None:
                names = [_BASE_ADAPTER if s.adapter is None else s.adapter for s in sequences]
                output = self._adapter_model(**inputs, use_cache=True, adapter_names=names, **self._keep_last_logits)
            else:
                output = self.model(**inputs, use_cache=True, **self._keep_last_logits)
        return output.logits[:, -1, :].float()  # type: ignore[no-any-return]

    @torch.inference_mode()
    def run(self, sequences: list[Sequence], take: Callable[[int], list[Sequence]] | None = None) -> None:
        """Generate every sequence to its end, reporting as it goes.

        Between two decoding steps, ``take(rows_now)`` may hand over more sequences: they are prefilled on their
        own and join the running batch (their KV cache is merged in with left padding), where the cache allows it.
        """
        rows = self._prefill([s for s in sequences if not s.cancelled])
        while rows is not None:
            if take is not None and _can_merge(rows.cache):
                newcomers = self._prefill([s for s in take(rows.size) if not s.cancelled])
                if newcomers is not None:
                    rows = _merge(rows, newcomers)
            rows = self._step(rows)

    def _prefill(self, sequences: list[Sequence]) -> _Rows | None:
        """The rows of ``sequences`` ready to decode: each distinct prompt not in :attr:`prompts` is run through the
        model once (together, left-padded), and every sequence starts from its prompt's cache and logits."""
        if not sequences:
            return None
        if self.prompts.max_bytes == 0 or self._reusable_cache is False:
            return self._run_prompts(sequences)
        # Under the lock from lookup to keeping: a weight change (paused(), which empties the cache) cannot fall
        # between prefilling a prompt and keeping it.
        with self.lock:
            keys: list[PromptKey] = [(tuple(s.prompt_token_ids), s.adapter) for s in sequences]
            found: dict[PromptKey, PrefilledPrompt] = {}
            missing: dict[PromptKey, Sequence] = {}
            for key, sequence in zip(keys, sequences, strict=True):
                if key in found or key in missing:
                    continue
                entry = self.prompts.get(key)
                if entry is None:
                    missing[key] = sequence
                else:
                    found[key] = entry
            if missing:
                distinct = list(missing.values())
                shared = _shared_prefix_length(distinct) if self._reusable_cache else 0
                rows = self._run_shared_prefix(distinct, shared) if shared else self._run_prompts(distinct)
                if self._reusable_cache is None:
                    self._reusable_cache = _can_merge(rows.cache)
                if not self._reusable_cache:  # e.g. sliding-window layers: every sequence runs its own prompt
                    return rows if len(missing) == len(sequences) else self._run_prompts(sequences)
                for key, entry in zip(missing, _split_prompts(rows), strict=True):
                    found[key] = entry
                    self.prompts.put(key, entry)
            self.prompts.reused += len(sequences) - len(missing)
            return _stack_prompts(sequences, keys, found)

    def _run_prompts(self, sequences: list[Sequence]) -> _Rows:
        """Run the prompts of ``sequences`` (left-padded to the longest) through the model."""
        device = next(self.model.parameters()).device
        input_ids, attention_mask = self._left_padded([s.prompt_token_ids for s in sequences], device)
        positions = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)
        cache = _new_cache()
        logits = self._forward(
            cache, sequences, input_ids=input_ids, attention_mask=attention_mask, position_ids=positions
        )
        return _Rows(sequences, cache, attention_mask, positions[:, -1:], logits)

    def _run_shared_prefix(self, sequences: list[Sequence], shared: int) -> _Rows:
        """Run prompts that all begin with the same ``shared`` tokens: those once, on one row, then each prompt's
        rest (left-padded to the longest) on that row's keys and values. The rows' caches are then the prefix,
        padding, and their own tokens, which :func:`_split_prompts` takes apart by the attention mask."""
        device = next(self.model.parameters()).device
        prefix = torch.tensor([sequences[0].prompt_token_ids[:shared]], device=device)
        cache = _new_cache()
        self._forward(
            cache,
            sequences[:1],
            input_ids=prefix,
            attention_mask=torch.ones_like(prefix),
            position_ids=torch.arange(shared, device=device)[None],
        )
        rows = len(sequences)
        for layer in cache.layers:  # every row starts from the prefix (the next update copies out of the view)
            layer.keys = layer.keys.expand(rows, -1, -1, -1)
            layer.values = layer.values.expand(rows, -1, -1, -1)
        input_ids, rest_mask = self._left_padded([s.prompt_token_ids[shared:] for s in sequences], device)
        attention_mask = torch.cat([rest_mask.new_ones((rows, shared)), rest_mask], dim=1)
        positions = shared + (rest_mask.cumsum(dim=-1) - 1).clamp(min=0)
        logits = self._forward(
            cache, sequences, input_ids=input_ids, attention_mask=attention_mask, position_ids=positions
        )
        self.prefix_tokens_shared += shared * (rows - 1)
        return _Rows(sequences, cache, attention_mask, positions[:, -1:], logits)

    def _left_padded(self, token_ids: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``token_ids`` as one left-padded ``[rows, longest]`` tensor, and its attention mask (0 on padding)."""
        width = max(len(ids) for ids in token_ids)
        input_ids = torch.tensor([[self.pad_token_id] * (width - len(ids)) + ids for ids in token_ids], device=device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in token_ids], device=device)
        return input_ids, mask

    def _step(self, rows: _Rows) -> _Rows | None:
        """Choose each row's next token from its logits, drop the rows that ended, and run the others one step."""
        live = rows.sequences
        next_tokens = sample_next_tokens(rows.logits, [s.params for s in live], [s.generator for s in live])
        wants_logprobs = [i for i, s in enumerate(live) if s.params.logprobs]
        logprobs = torch.log_softmax(rows.logits[wants_logprobs], dim=-1) if wants_logprobs else None
        keep: list[int] = []
        for row, (sequence, token) in enumerate(zip(live, next_tokens.tolist(), strict=True)):
            if sequence.cancelled:
                continue
            if logprobs is not None and sequence.params.logprobs:
                sequence.logprobs.append(self._logprob(logprobs[wants_logprobs.index(row)], token, sequence))
            if token in self.eos_token_ids or token in sequence.params.stop_token_ids:
                # Kept in token_ids (with its logprob), as vLLM does: a trainer must also learn when to stop.
                sequence.text.add_stop_token(token)
                sequence.finish("stop")
                continue
            if sequence.text.add(token):
                sequence.finish("stop")
            elif len(sequence.text.token_ids) >= sequence.params.max_tokens:
                sequence.finish("length")
            else:
                if sequence.stream:
                    sequence.report_streamable()
                keep.append(row)
        if not keep:
            return None
        cache, attention_mask, positions = rows.cache, rows.attention_mask, rows.positions
        if len(keep) < len(live):
            index = torch.tensor(keep, device=attention_mask.device)
            cache.batch_select_indices(index)
            attention_mask, positions, next_tokens = attention_mask[index], positions[index], next_tokens[index]
            live = [live[i] for i in keep]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(live), 1))], dim=-1)
        positions = positions + 1
        logits = self._forward(
            cache, live, input_ids=next_tokens[:, None], attention_mask=attention_mask, position_ids=positions
        )
        return _Rows(live, cache, attention_mask, positions, logits)

    def _logprob(self, row_logprobs: torch.Tensor, token: int, sequence: Sequence) -> TokenLogprob:
        text, data = self.token_info(token)
        top: list[TopLogprob] = []
        if sequence.params.top_logprobs:
            values, ids = row_logprobs.topk(sequence.params.top_logprobs)
            for value, top_id in zip(values.tolist(), ids.tolist(), strict=True):
                top_text, top_data = self.token_info(top_id)
                top.append(TopLogprob(token=top_text, logprob=value, bytes=top_data))
        return TokenLogprob(token=text, logprob=float(row_logprobs[token]), bytes=data, top_logprobs=top)


#: Distinct prompts prefilled together run the tokens they all begin with once when there are at least this many
#: (a system message; SmolLM2's chat template adds one to every prompt that has none).
MIN_SHARED_PREFIX = 16


def _shared_prefix_length(sequences: list[Sequence]) -> int:
    """How many first tokens the prompts of ``sequences`` all have in common, if they are worth running once
    (:data:`MIN_SHARED_PREFIX`, and all under one adapter, whose weights make the keys and values), else 0. Every
    prompt keeps at least its last token to run: it gives the logits of the first generated token."""
    if len(sequences) < 2 or len({s.adapter for s in sequences}) > 1:
        return 0
    prompts = [s.prompt_token_ids for s in sequences]
    shortest = min(len(p) for p in prompts) - 1
    first = prompts[0]
    shared = 0
    while shared < shortest and all(p[shared] == first[shared] for p in prompts):
        shared += 1
    return shared if shared >= MIN_SHARED_PREFIX else 0


def _split_prompts(rows: _Rows) -> list[PrefilledPrompt]:
    """Each row of freshly prefilled ``rows`` as a prompt of its own: its cache at the positions its attention
    mask keeps (no padding, wherever it is; a copy, so the batch's tensors are not kept alive by it) and its
    logits."""
    prompts = []
    layers = rows.cache.layers
    for row in range(rows.size):
        kept = rows.attention_mask[row].bool()
        prompts.append(
            PrefilledPrompt(
                keys=tuple(layer.keys[row : row + 1, :, kept] for layer in layers),
                values=tuple(layer.values[row : row + 1, :, kept] for layer in layers),
                logits=rows.logits[row].clone(),
            )
        )
    return prompts


def _stack_prompts(sequences: list[Sequence], keys: list[PromptKey], found: dict[PromptKey, PrefilledPrompt]) -> _Rows:
    """One batch of ``sequences``, each starting from its prompt in ``found`` (left-padded to the longest)."""
    order = {key: i for i, key in enumerate(found)}
    prompts = list(found.values())
    logits = torch.stack([p.logits for p in prompts])
    index = torch.tensor([order[key] for key in keys], device=logits.device)
    width = max(p.length for p in prompts)
    cache = _new_cache()
    for layer in range(len(prompts[0].keys)):
        layer_keys = torch.cat([_left_pad(p.keys[layer], width, -2) for p in prompts])
        layer_values = torch.cat([_left_pad(p.values[layer], width, -2) for p in prompts])
        cache.update(layer_keys[index], layer_values[index], layer)
    lengths = torch.tensor([p.length for p in prompts], device=logits.device)[index]
    attention_mask = (torch.arange(width, device=logits.device) >= (width - lengths)[:, None]).long()
    return _Rows(sequences, cache, attention_mask, (lengths - 1)[:, None], logits[index])


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet, reversed: which byte each character of a token stands for."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes, strict=True)}


def _byte_level_bytes(token: str) -> bytes | None:
    """The bytes of a byte-level BPE token (``Ġhello`` → ``b" hello"``), or None if it is not one."""
    decoder = _byte_decoder()
    if all(ch in decoder for ch in token):
        return bytes(decoder[ch] for ch in token)
    return None
