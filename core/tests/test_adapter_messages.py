"""Adapters: the chat examples (``TraceToMessages``) trainers get out of an attempt's spans for fine-tuning."""

from __future__ import annotations

import json

from attempt_spans import Attempt

from agentlightning import semconv
from agentlightning.adapter import ChatExample, TraceToMessages


def test_messages_are_input_then_output_per_call_with_tool_calls_kept() -> None:
    tools = [{"type": "function", "function": {"name": "calc", "parameters": {"type": "object"}}}]
    tool_call = {"id": "call_1", "type": "function", "function": {"name": "calc", "arguments": '{"x": "2+2"}'}}
    first_input = [{"role": "system", "content": "Use tools."}, {"role": "user", "content": "2+2?"}]
    first_output = [{"role": "assistant", "content": None, "tool_calls": [tool_call]}]
    second_input = [
        *first_input,
        *first_output,
        {"role": "tool", "tool_call_id": "call_1", "content": "4"},
    ]
    second_output = [{"role": "assistant", "content": "It is 4."}]
    attempt = Attempt()
    root = attempt.agent("solver", 0, 10)
    first = attempt.call(
        1,
        2,
        parent=root,
        attributes={
            semconv.GEN_AI_INPUT_MESSAGES: json.dumps(first_input),
            semconv.GEN_AI_OUTPUT_MESSAGES: json.dumps(first_output),
            semconv.GEN_AI_TOOL_DEFINITIONS: json.dumps(tools),
        },
    )
    attempt.span("execute_tool calc", 2.1, 2.2, parent=root)
    second = attempt.call(
        3,
        4,
        parent=root,
        attributes={
            semconv.GEN_AI_INPUT_MESSAGES: json.dumps(second_input),
            semconv.GEN_AI_OUTPUT_MESSAGES: json.dumps(second_output),
        },
    )
    attempt.call(5, 6, agent="critic")
    attempt.reward(0.2, at=4.5)
    attempt.reward(1.0, at=11)

    examples = TraceToMessages(agents=["solver"]).adapt(attempt.spans)

    assert examples == [
        ChatExample(
            messages=[*first_input, *first_output], tools=tools, agent_name="solver", reward=1.0, span_id=first.span_id
        ),
        ChatExample(
            messages=[*second_input, *second_output],
            tools=None,
            agent_name="solver",
            reward=1.0,
            span_id=second.span_id,
        ),
    ]
    assert examples[0].messages[-1] == {"role": "assistant", "content": None, "tool_calls": [tool_call]}
    assert [e.agent_name for e in TraceToMessages().adapt(attempt.spans)] == ["solver", "solver", "critic"]
