"""AutoGen's model-call arguments and results as the GenAI span attributes the gateway writes.

The formats follow :mod:`agentlightning.gateway.record`: messages are OpenAI-style chat messages (``role``,
``content``, ``tool_calls`` with ``function.name`` / ``function.arguments``, ``tool_call_id``) serialised once as
JSON text, tools in OpenAI's function format, sampling parameters under the ``gen_ai.request.*`` names. This runs
on the agent's task for every LLM call, so it reads AutoGen's objects directly and makes one JSON call
(:func:`~agentlightning.tracer.attribute_text`) per attribute.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from autogen_core import FunctionCall
from autogen_core.models import (
    AssistantMessage,
    CreateResult,
    FunctionExecutionResultMessage,
    SystemMessage,
    UserMessage,
)

from agentlightning import semconv
from agentlightning.tracer import attribute_text

__all__ = ["message_dicts", "request_attributes", "response_attributes", "tool_definitions"]


def _tool_calls(calls: Sequence[FunctionCall]) -> list[dict[str, Any]]:
    return [
        {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
        for call in calls
    ]


def _user_content(content: Any) -> Any:
    if isinstance(content, str):
        return content
    # Text and images; an image is left as a marker (its data URI would be most of the span, and the gateway
    # records the request as sent).
    return [
        {"type": "text", "text": part} if isinstance(part, str) else {"type": "image_url", "image_url": {"url": "…"}}
        for part in content
    ]


def message_dicts(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """AutoGen's ``LLMMessage`` list as OpenAI-style chat messages: a function-results message becomes one
    ``tool`` message per result, as AutoGen sends it; a user message keeps its source as ``name`` (in a team, the
    agent that said it)."""
    result: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            result.append({"role": "system", "content": message.content})
        elif isinstance(message, UserMessage):
            result.append({"role": "user", "content": _user_content(message.content), "name": message.source})
        elif isinstance(message, AssistantMessage):
            if isinstance(message.content, str):
                result.append({"role": "assistant", "content": message.content})
            else:
                result.append(
                    {"role": "assistant", "content": message.thought, "tool_calls": _tool_calls(message.content)}
                )
        elif isinstance(message, FunctionExecutionResultMessage):
            result.extend(
                {"role": "tool", "tool_call_id": item.call_id, "content": item.content} for item in message.content
            )
        else:  # a message type a later AutoGen adds: kept as what it says it is
            result.append({"role": str(getattr(message, "type", "unknown")), "content": attribute_text(message)})
    return result


# A tool's definition as JSON text, per tool object: AutoGen builds a tool's schema from its pydantic model on every
# ``schema`` access, which costs more than the rest of recording a call.
_TOOL_JSON: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _definition(schema: Mapping[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": schema.get("name")}
    if "description" in schema:
        function["description"] = schema["description"]
    if "parameters" in schema:
        function["parameters"] = schema["parameters"]
    return {"type": "function", "function": function}


def _tool_json(tool: Any) -> str:
    if isinstance(tool, Mapping):  # a ToolSchema
        return attribute_text(_definition(tool))
    try:
        text = _TOOL_JSON.get(tool)
    except TypeError:  # not weakly referenceable or not hashable: no cache
        return attribute_text(_definition(tool.schema))
    if text is None:
        text = _TOOL_JSON[tool] = attribute_text(_definition(tool.schema))
    return text


def tool_definitions(tools: Sequence[Any]) -> str:
    """AutoGen tools (or their schemas) in OpenAI's function format, as JSON text."""
    return "[" + ",".join(_tool_json(tool) for tool in tools) + "]"


def request_attributes(
    model: str | None, messages: Sequence[Any], tools: Sequence[Any], extra_create_args: Mapping[str, Any]
) -> dict[str, Any]:
    """The request side of a model call: operation, model, messages, tools offered and sampling parameters."""
    attributes: dict[str, Any] = {semconv.GEN_AI_OPERATION_NAME: semconv.GEN_AI_OPERATION_CHAT}
    if model:
        attributes[semconv.GEN_AI_REQUEST_MODEL] = model
    attributes[semconv.GEN_AI_INPUT_MESSAGES] = attribute_text(message_dicts(messages))
    if tools:
        attributes[semconv.GEN_AI_TOOL_DEFINITIONS] = tool_definitions(tools)
    for key, name in semconv.GEN_AI_REQUEST_PARAMETERS.items():
        value = extra_create_args.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            attributes[name] = value
    stop = extra_create_args.get("stop")
    if isinstance(stop, str):
        attributes[semconv.GEN_AI_REQUEST_STOP_SEQUENCES] = [stop]
    elif isinstance(stop, list) and stop and all(isinstance(s, str) for s in stop):
        attributes[semconv.GEN_AI_REQUEST_STOP_SEQUENCES] = stop
    return attributes


def response_attributes(result: CreateResult) -> dict[str, Any]:
    """The response side: the answer as one assistant message (tool calls included), finish reason, usage."""
    if isinstance(result.content, str):
        output: dict[str, Any] = {"role": "assistant", "content": result.content}
    else:
        # AutoGen moves text that comes with tool calls into ``thought``.
        output = {"role": "assistant", "content": result.thought, "tool_calls": _tool_calls(result.content)}
    attributes: dict[str, Any] = {
        semconv.GEN_AI_OUTPUT_MESSAGES: attribute_text([output]),
        semconv.GEN_AI_RESPONSE_FINISH_REASONS: [str(result.finish_reason)],
    }
    usage = result.usage
    if isinstance(usage.prompt_tokens, int):
        attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] = usage.prompt_tokens
    if isinstance(usage.completion_tokens, int):
        attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] = usage.completion_tokens
    if result.cached:
        attributes["autogen.response.cached"] = True
    return attributes
