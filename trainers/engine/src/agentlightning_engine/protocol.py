"""The OpenAI chat-completions wire format, plus vLLM's token fields (``prompt_token_ids``, ``token_ids``).

Requests are validated here (a bad one is an OpenAI-shaped 400); responses are built from these models,
so what the server sends and what :class:`~agentlightning_engine.TransformersEngine` returns in-process
are the same objects.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentlightning_engine.errors import InvalidRequest

__all__ = [
    "ChatCompletionRequest",
    "StreamOptions",
    "ChatCompletion",
    "ChatCompletionChunk",
    "Choice",
    "ChunkChoice",
    "ResponseMessage",
    "Delta",
    "ToolCall",
    "FunctionCall",
    "ChoiceLogprobs",
    "TokenLogprob",
    "TopLogprob",
    "Usage",
    "FinishReason",
    "template_message",
]

FinishReason = Literal["stop", "length", "tool_calls", "abort"]


class StreamOptions(BaseModel):
    """``stream_options``: ``include_usage`` adds a last chunk with usage and no choices."""

    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """A ``POST /v1/chat/completions`` body. Unknown fields (``user``, ``return_token_ids``…) are accepted and
    ignored; token ids are always returned."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[dict[str, Any]] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    #: vLLM's extra stop condition: token ids that end a choice (the last of its ``token_ids``, like EOS; no text).
    stop_token_ids: list[int] | None = None
    n: int = Field(default=1, ge=1, le=64)
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None

    @field_validator("messages")
    @classmethod
    def _messages_have_roles(cls, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for index, message in enumerate(messages):
            if not isinstance(message.get("role"), str):
                raise ValueError(f"messages[{index}] has no 'role' string")
        return messages

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, stop: str | list[str] | None) -> str | list[str] | None:
        strings = [stop] if isinstance(stop, str) else (stop or [])
        if any(s == "" for s in strings):
            raise ValueError("stop strings must not be empty")
        return stop

    @property
    def stop_strings(self) -> list[str]:
        """``stop`` as a list."""
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def token_limit(self) -> int | None:
        """The most tokens a choice may have: ``max_completion_tokens``, else ``max_tokens``."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def parses_tool_calls(self) -> bool:
        """Whether ``<tool_call>`` blocks in the output are turned into ``tool_calls``."""
        return bool(self.tools) and self.tool_choice != "none"


class TopLogprob(BaseModel):
    """One of the most likely tokens at a position."""

    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    """The logprob of one generated token (the model's own distribution, before temperature and top-p)."""

    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    """``choices[].logprobs``: one entry per generated token, aligned with ``token_ids``."""

    content: list[TokenLogprob]


class FunctionCall(BaseModel):
    """The function a tool call names, with its arguments as JSON text."""

    name: str
    arguments: str


class ToolCall(BaseModel):
    """A tool call parsed from the output."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ToolCallDelta(ToolCall):
    """A tool call in a stream chunk (OpenAI numbers them)."""

    index: int


class ResponseMessage(BaseModel):
    """The assistant's message of a choice."""

    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCall] | None = None


class Choice(BaseModel):
    """One completion of a request. ``token_ids`` are exactly the generated tokens, ending with the EOS or stop token
    that ended the choice (as in vLLM), and ``message.content == tokenizer.decode(token_ids, skip_special_tokens=True)``
    unless tool calls were parsed out of it (or a stop token that is not a special token ended it)."""

    index: int
    message: ResponseMessage
    finish_reason: FinishReason
    logprobs: ChoiceLogprobs | None = None
    token_ids: list[int]


class Usage(BaseModel):
    """Token counts of a request (completion tokens summed over its choices)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    """A chat completion, with vLLM's ``prompt_token_ids``."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    prompt_token_ids: list[int]


class Delta(BaseModel):
    """What a stream chunk adds to a choice."""

    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(BaseModel):
    """One choice's part of a stream chunk, with the ids of the tokens it adds."""

    index: int
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: ChoiceLogprobs | None = None
    token_ids: list[int] = Field(default_factory=list)


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed chat completion. The first chunk carries ``prompt_token_ids``."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    prompt_token_ids: list[int] | None = None

    def to_json(self) -> str:
        """The chunk as the server sends it: fields that are None are left out, as vLLM does."""
        return self.model_dump_json(exclude_none=True)


def template_message(message: dict[str, Any], index: int) -> dict[str, Any]:
    """An OpenAI message as chat templates expect it: text content as one string, tool-call arguments as dicts."""
    message = dict(message)
    content = message.get("content")
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise InvalidRequest(
                    f"messages[{index}] has a content part of type {kind!r}; only text parts are supported.",
                    param=f"messages.{index}.content",
                )
            texts.append(part["text"])
        message["content"] = "".join(texts)
    elif content is None:
        message["content"] = ""
    elif not isinstance(content, str):
        raise InvalidRequest(
            f"messages[{index}].content must be a string or a list of text parts.", param=f"messages.{index}.content"
        )
    if isinstance(message.get("tool_calls"), list):
        calls = []
        for call in message["tool_calls"]:
            call = dict(call) if isinstance(call, dict) else call
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                try:
                    call["function"] = {**function, "arguments": json.loads(function["arguments"])}
                except json.JSONDecodeError:
                    pass
            calls.append(call)
        message["tool_calls"] = calls
    return message
