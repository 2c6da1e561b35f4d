"""Stop strings, stream hold-back and tool-call parsing, on SmolLM2's real tokenizer."""

from __future__ import annotations

import json

import pytest
from agentlightning_engine import TransformersEngine
from agentlightning_engine.text import ChoiceText
from agentlightning_engine.tool_calls import TOOL_CALL_START, parse_tool_calls


def feed(engine: TransformersEngine, text: str, stop: list[str], hold: tuple[str, ...] = ()) -> tuple[ChoiceText, str]:
    """Feed the tokens of ``text`` one by one, streaming what may be streamed; returns the tracker and the stream."""
    choice = ChoiceText(engine.tokenizer, stop, hold)
    streamed = ""
    for token in engine.tokenizer(text, add_special_tokens=False)["input_ids"]:
        stopped = choice.add(token)
        if stopped:
            break
        streamed += choice.take_streamable()[1]
    streamed += choice.take_rest()[1]
    return choice, streamed


def test_stop_string_inside_and_across_tokens(engine: TransformersEngine) -> None:
    choice, streamed = feed(engine, "The answer is 42. Done here.", ["42."])
    assert choice.text == "The answer is " and streamed == choice.text  # SmolLM2 has digits as tokens of their own
    assert choice.text == engine.tokenizer.decode(choice.token_ids, skip_special_tokens=True)
    choice, streamed = feed(engine, "Hello world, and more", [" world,"])
    assert choice.text == streamed == "Hello"


def test_text_that_may_begin_a_stop_string_is_held_back(engine: TransformersEngine) -> None:
    choice = ChoiceText(engine.tokenizer, ["END!"])
    for token in engine.tokenizer("abc EN", add_special_tokens=False)["input_ids"]:
        choice.add(token)
    ids, text = choice.take_streamable()
    assert text == "abc" and engine.tokenizer.decode(ids) == "abc"
    assert choice.take_rest()[1] == " EN"


def test_a_character_split_over_tokens_is_streamed_whole(engine: TransformersEngine) -> None:
    text = "snow \u2603 and \U0001f600 face"
    choice, streamed = feed(engine, text, [])
    assert streamed == text == choice.text


def test_tool_call_blocks_are_held_back_until_the_end(engine: TransformersEngine) -> None:
    call = '<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    choice = ChoiceText(engine.tokenizer, [], (TOOL_CALL_START,))
    streamed = ""
    for token in engine.tokenizer("Let me check. " + call, add_special_tokens=False)["input_ids"]:
        choice.add(token)
        streamed += choice.take_streamable()[1]
    assert streamed == "Let me check."  # SmolLM2 has " <" as one token
    assert choice.take_rest()[1] == " " + call


def test_parse_tool_calls() -> None:
    content, calls = parse_tool_calls(
        'Sure.<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>\n'
        '<tool_call>{"name": "now", "parameters": {}}'  # unterminated: the model stopped at EOS
    )
    assert content == "Sure."
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("add", {"a": 1, "b": 2}),
        ("now", {}),
    ]
    assert all(c.id.startswith("call_") and c.type == "function" for c in calls)
    assert len({c.id for c in calls}) == 2


@pytest.mark.parametrize("text", ["no calls here", "<tool_call>{not json}</tool_call>", '<tool_call>["x"]</tool_call>'])
def test_text_without_valid_tool_calls_stays_content(text: str) -> None:
    assert parse_tool_calls(text) == (text, [])
