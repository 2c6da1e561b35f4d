"""The selected examples for fine-tuning elsewhere: JSONL in OpenAI's chat fine-tuning format, or a Hugging Face
``datasets.Dataset`` with the same columns.

Each example is one record ``{"messages": [...], "tools": [...]}`` (``tools`` only when the call offered
some): the call's input messages, then the model's reply, tool calls included. Messages keep the fields of
OpenAI's chat format (``role``, ``content``, ``name``, ``tool_calls``, ``tool_call_id``) and drop the rest of
what the engine answered (``refusal``, ``annotations``…) and empty values.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agentlightning.adapter import ChatExample

__all__ = ["openai_chat_record", "to_hf_dataset", "write_jsonl"]

_MESSAGE_FIELDS = ("role", "content", "name", "tool_calls", "tool_call_id")
_TOOL_CALL_FIELDS = ("id", "type", "function")


def openai_chat_record(example: ChatExample) -> dict[str, Any]:
    """One example as a line of OpenAI's chat fine-tuning format."""
    record: dict[str, Any] = {"messages": [_message(m) for m in example.messages]}
    if example.tools:
        record["tools"] = example.tools
    return record


def write_jsonl(examples: Iterable[ChatExample], path: str | os.PathLike[str]) -> Path:
    """Write ``examples`` to ``path``, one JSON record a line (:func:`openai_chat_record`); returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", encoding="utf-8") as file:
        for example in examples:
            file.write(json.dumps(openai_chat_record(example), ensure_ascii=False) + "\n")
    return target


def to_hf_dataset(examples: Iterable[ChatExample]) -> Any:
    """The examples as a ``datasets.Dataset`` with a ``messages`` column (and ``tools`` when any example offered
    tools), the layout chat fine-tuning tools such as TRL's ``SFTTrainer`` read."""
    import datasets  # type: ignore[import-untyped]

    records = [openai_chat_record(e) for e in examples]
    if any("tools" in r for r in records):
        records = [{"messages": r["messages"], "tools": r.get("tools")} for r in records]
    return datasets.Dataset.from_list(records)


def _message(message: Any) -> Any:
    if not isinstance(message, dict):  # a message the recorder could not parse, kept as text
        return {"role": "user", "content": str(message)}
    kept = {k: message[k] for k in _MESSAGE_FIELDS if message.get(k) not in (None, [], "")}
    if "content" not in kept and message.get("role") == "assistant" and "tool_calls" not in kept:
        kept["content"] = ""
    if "tool_calls" in kept and isinstance(kept["tool_calls"], list):
        kept["tool_calls"] = [
            {k: call[k] for k in _TOOL_CALL_FIELDS if k in call} if isinstance(call, dict) else call
            for call in kept["tool_calls"]
        ]
    return kept
