"""Export of the selected examples: OpenAI chat fine-tuning JSONL (tool calls kept) that the `datasets` package
loads, and the same examples as a `datasets.Dataset`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets  # type: ignore[import-untyped]
from agentlightning_sft import openai_chat_record, to_hf_dataset, write_jsonl

from agentlightning.adapter import ChatExample

TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two numbers.",
        "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}},
    },
}
CALL = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}


def _examples() -> list[ChatExample]:
    question = {"role": "user", "content": "What is 2 + 3?"}
    # As the engine answered: extra fields, nulls.
    tool_reply = {"role": "assistant", "content": None, "tool_calls": [CALL], "refusal": None, "annotations": []}
    return [
        ChatExample(messages=[question, tool_reply], tools=[TOOL], agent_name="calc", reward=1.0, span_id="0" * 16),
        ChatExample(
            messages=[
                question,
                {"role": "assistant", "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "5"},
                {"role": "assistant", "content": "5", "tool_calls": None, "refusal": None},
            ],
            tools=[TOOL],
            agent_name="calc",
            reward=1.0,
            span_id="1" * 16,
        ),
    ]


def test_records_follow_openai_chat_fine_tuning_format() -> None:
    first, second = (openai_chat_record(e) for e in _examples())

    assert first == {
        "messages": [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "tool_calls": [CALL]}],
        "tools": [TOOL],
    }
    assert second["messages"][2:] == [
        {"role": "tool", "content": "5", "tool_call_id": "call_1"},
        {"role": "assistant", "content": "5"},
    ]
    assert "tools" not in openai_chat_record(
        ChatExample(messages=[{"role": "user", "content": "hi"}], span_id="2" * 16)
    )


def test_exported_jsonl_loads_with_the_datasets_package(tmp_path: Path) -> None:
    path = write_jsonl(_examples(), tmp_path / "out" / "selected.jsonl")

    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [openai_chat_record(e) for e in _examples()]
    loaded = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.num_rows == 2
    row: dict[str, Any] = loaded[1]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert row["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"a": 2, "b": 3}'
    assert row["messages"][3]["content"] == "5"
    assert row["tools"][0]["function"]["name"] == "add"


def test_hugging_face_dataset_has_messages_and_tools() -> None:
    dataset = to_hf_dataset(_examples())

    assert isinstance(dataset, datasets.Dataset)
    assert dataset.column_names == ["messages", "tools"]
    assert dataset[0]["messages"][1]["tool_calls"][0]["id"] == "call_1"
    assert (dataset[1]["messages"][2]["role"], dataset[1]["messages"][2]["tool_call_id"]) == ("tool", "call_1")
