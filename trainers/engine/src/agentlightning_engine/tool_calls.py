"""Tool calls in generated text, Hermes / Qwen style: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``.

Best effort: the blocks are parsed only when the request has ``tools`` (and ``tool_choice`` is not ``"none"``);
if any block is not a JSON object with a ``name``, nothing is parsed and the text stays content. An
unterminated last block (the model stopped before ``</tool_call>``) is parsed too. Other formats (Llama 3's
``<|python_tag|>``, Mistral's ``[TOOL_CALLS]``) are not recognised.
"""

from __future__ import annotations

import json
import re
import uuid

from agentlightning_engine.protocol import FunctionCall, ToolCall

__all__ = ["TOOL_CALL_START", "parse_tool_calls"]

TOOL_CALL_START = "<tool_call>"
_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def parse_tool_calls(text: str) -> tuple[str | None, list[ToolCall]]:
    """Split ``text`` into the content outside the tool-call blocks (None if empty) and the tool calls.

    Returns ``(text, [])`` when there are no blocks or one of them cannot be parsed.
    """
    calls: list[ToolCall] = []
    for match in _BLOCK.finditer(text):
        try:
            call = json.loads(match.group(1))
        except json.JSONDecodeError:
            return text, []
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return text, []
        arguments = call.get("arguments", call.get("parameters", {}))
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        calls.append(
            ToolCall(id=f"call_{uuid.uuid4().hex[:24]}", function=FunctionCall(name=call["name"], arguments=arguments))
        )
    if not calls:
        return text, []
    content = _BLOCK.sub("", text).strip()
    return content or None, calls
