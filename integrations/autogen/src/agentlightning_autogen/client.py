"""The explicit form: one model client whose calls are recorded, without changing AutoGen for the whole process."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Literal

from autogen_core import CancellationToken
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelCapabilities,
    ModelInfo,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from agentlightning_autogen.recorder import LightningRecorder

__all__ = ["LightningChatCompletionClient"]


class LightningChatCompletionClient(ChatCompletionClient):
    """A model client that records each call of ``client`` (any AutoGen ``ChatCompletionClient``) as an LLM-call
    span of the active rollout, named after the agent making it, and otherwise is ``client``::

        model = LightningChatCompletionClient(chat_completion_client(llm))
        agent = AssistantAgent("solver", model_client=model, tools=[...])

    This records model calls only; agents and tool calls are in the rollout anyway, as AutoGen's own spans.
    :func:`~agentlightning_autogen.instrument` records every OpenAI-style client without wrapping, and tool
    arguments, results and team runs too; a call through both is recorded once. ``recorder`` (default: a new one)
    counts failures to record in ``recorder.errors``.
    """

    def __init__(self, client: ChatCompletionClient, *, recorder: LightningRecorder | None = None) -> None:
        self.client = client
        self.recorder = recorder if recorder is not None else LightningRecorder()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.client!r})"

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        """The inner client's ``create``, recorded."""
        return await self.recorder.create(
            self.client,
            self.client.create,
            messages,
            tools=tools,
            tool_choice=tool_choice,
            json_output=json_output,
            extra_create_args=extra_create_args,
            cancellation_token=cancellation_token,
        )

    def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        """The inner client's ``create_stream``, recorded as one call."""
        return self.recorder.create_stream(
            self.client,
            self.client.create_stream,
            messages,
            tools=tools,
            tool_choice=tool_choice,
            json_output=json_output,
            extra_create_args=extra_create_args,
            cancellation_token=cancellation_token,
        )

    async def close(self) -> None:
        """Close the inner client."""
        await self.client.close()

    def actual_usage(self) -> RequestUsage:
        """The inner client's."""
        return self.client.actual_usage()

    def total_usage(self) -> RequestUsage:
        """The inner client's."""
        return self.client.total_usage()

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """The inner client's."""
        return self.client.count_tokens(messages, tools=tools)

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """The inner client's."""
        return self.client.remaining_tokens(messages, tools=tools)

    @property
    def capabilities(self) -> ModelCapabilities:
        """The inner client's (deprecated in AutoGen: use :attr:`model_info`)."""
        return self.client.capabilities

    @property
    def model_info(self) -> ModelInfo:
        """The inner client's."""
        return self.client.model_info
