"""LangChain's messages, invocation parameters and results as the GenAI span attributes the gateway writes.

The formats follow :mod:`agentlightning.gateway.record`: messages are OpenAI-style chat messages (``role``,
``content``, ``tool_calls`` with ``function.name`` / ``function.arguments``, ``tool_call_id``) serialised once as
JSON text, tools in OpenAI's function format, sampling parameters under the ``gen_ai.request.*`` names. This runs
on the agent's thread for every LLM call, so it reads LangChain's objects directly (no pydantic validation, no
copies of whole messages) and makes one JSON call (:func:`~agentlightning.tracer.attribute_text`) per attribute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from agentlightning import semconv
from agentlightning.tracer import attribute_text

__all__ = ["message_dicts", "request_attributes", "response_attributes", "tool_result"]

# LangChain's message types (and their streamed chunk types) as OpenAI roles.
_ROLES = {
    "human": "user",
    "HumanMessageChunk": "user",
    "ai": "assistant",
    "AIMessageChunk": "assistant",
    "system": "system",
    "SystemMessageChunk": "system",
    "tool": "tool",
    "ToolMessageChunk": "tool",
    "function": "function",
    "FunctionMessageChunk": "function",
}


_PARAMETER_KEYS = frozenset(semconv.GEN_AI_REQUEST_PARAMETERS)


def _message_dict(message: BaseMessage) -> dict[str, Any]:
    kind = message.type
    role = getattr(message, "role", None) if kind in ("chat", "ChatMessageChunk") else _ROLES.get(kind, kind)
    result: dict[str, Any] = {"role": role, "content": message.content}
    if message.name:
        result["name"] = message.name
    # Only AI and tool messages have these fields; asking others costs pydantic's slow attribute miss.
    if role == "assistant":
        tool_calls = getattr(message, "tool_calls", None)
        invalid = getattr(message, "invalid_tool_calls", None)
        if tool_calls or invalid:
            calls = [
                {
                    "id": call.get("id"),
                    "type": "function",
                    "function": {"name": call.get("name"), "arguments": attribute_text(call.get("args", {}))},
                }
                for call in tool_calls or ()
            ]
            # A call whose arguments the model garbled is still what it said: keep its raw argument text.
            calls += [
                {
                    "id": call.get("id"),
                    "type": "function",
                    "function": {"name": call.get("name"), "arguments": call.get("args") or ""},
                }
                for call in invalid or ()
            ]
            result["tool_calls"] = calls
    elif role == "tool":
        result["tool_call_id"] = getattr(message, "tool_call_id", None)
    return result


def message_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages as OpenAI-style chat messages."""
    return [_message_dict(message) for message in messages]


def request_attributes(
    operation: str,
    invocation_params: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The request side of an LLM call: operation, provider, model, sampling parameters and tools offered."""
    params = invocation_params or {}
    attributes: dict[str, Any] = {semconv.GEN_AI_OPERATION_NAME: operation}
    provider = metadata.get("ls_provider") if metadata else None
    if isinstance(provider, str):
        attributes[semconv.GEN_AI_PROVIDER_NAME] = provider
    model = params.get("model") or params.get("model_name") or (metadata.get("ls_model_name") if metadata else None)
    if isinstance(model, str):
        attributes[semconv.GEN_AI_REQUEST_MODEL] = model
    # The few parameters given, not a lookup of each known one; in reverse order of names, so that where both are
    # given max_completion_tokens (which supersedes max_tokens) comes last and wins.
    for key in sorted(_PARAMETER_KEYS.intersection(params), reverse=True):
        value = params[key]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            attributes[semconv.GEN_AI_REQUEST_PARAMETERS[key]] = value
    stop = params.get("stop")
    if isinstance(stop, str):
        attributes[semconv.GEN_AI_REQUEST_STOP_SEQUENCES] = [stop]
    elif isinstance(stop, list) and stop and all(isinstance(s, str) for s in stop):
        attributes[semconv.GEN_AI_REQUEST_STOP_SEQUENCES] = stop
    tools = params.get("tools") or params.get("functions")
    if tools:
        attributes[semconv.GEN_AI_TOOL_DEFINITIONS] = attribute_text(tools)
    return attributes


def response_attributes(response: LLMResult, operation: str) -> dict[str, Any]:
    """The response side of an LLM call: output messages, finish reasons, usage, response id and model."""
    attributes: dict[str, Any] = {}
    generations = response.generations[0] if response.generations else []
    llm_output = response.llm_output or {}
    outputs: list[dict[str, Any]] = []
    reasons: list[str] = []
    metadata: Mapping[str, Any] = {}
    usage: Mapping[str, Any] | None = None
    for generation in generations:
        if isinstance(generation, ChatGeneration):
            message = generation.message
            outputs.append(_message_dict(message))
            if not metadata:
                metadata = message.response_metadata
            if usage is None:
                usage = getattr(message, "usage_metadata", None)
        else:
            outputs.append({"role": "assistant", "content": generation.text})
        reason = (generation.generation_info or {}).get("finish_reason") or metadata.get("finish_reason")
        if isinstance(reason, str):
            reasons.append(reason)
    attributes[semconv.GEN_AI_OUTPUT_MESSAGES] = attribute_text(outputs)
    if reasons:
        attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] = reasons
    response_id = llm_output.get("id") or metadata.get("id")
    if isinstance(response_id, str):
        attributes[semconv.GEN_AI_RESPONSE_ID] = response_id
    model = metadata.get("model_name") or llm_output.get("model_name")
    if isinstance(model, str):
        attributes[semconv.GEN_AI_RESPONSE_MODEL] = model
    if usage is not None:
        input_tokens, output_tokens = usage.get("input_tokens"), usage.get("output_tokens")
    else:
        token_usage = llm_output.get("token_usage") or {}
        input_tokens, output_tokens = token_usage.get("prompt_tokens"), token_usage.get("completion_tokens")
    if isinstance(input_tokens, int):
        attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] = input_tokens
    if isinstance(output_tokens, int):
        attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] = output_tokens
    return attributes


def tool_result(output: Any) -> tuple[str, str | None]:
    """What a tool returned, as text (a ``ToolMessage``'s content, JSON for anything else), and its call id."""
    if isinstance(output, BaseMessage):
        content = output.content
        return attribute_text(content), getattr(output, "tool_call_id", None)
    return attribute_text(output), None
