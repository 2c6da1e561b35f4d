"""What a critique reads: the runs of a candidate on the minibatch, rendered as text.

Each run is one finished rollout: its task, its final reward, whether it failed (and the exception it recorded),
and the conversation of the LLM calls of the agents a prompt shapes (``agl.TraceToMessages``): every message, the
tool calls the model made and the tool results it got. Runs are shown lowest reward first, since those say most
about what to change, within a character budget.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentlightning import semconv
from agentlightning.adapter import ChatExample
from agentlightning.reward import final_reward
from agentlightning.types import Rollout, RolloutStatus, Span

__all__ = ["Run", "make_run", "render_runs"]


@dataclass
class Run:
    """One finished rollout of a candidate, as a critique shows it."""

    rollout_id: str
    task: Any
    reward: float
    status: RolloutStatus
    #: ``type: message`` of each exception the attempt recorded.
    errors: list[str]
    #: The LLM calls of the selected agents, each a chat conversation with its response.
    calls: list[ChatExample]


def make_run(rollout: Rollout, spans: Sequence[Span], calls: list[ChatExample], missing_reward: float) -> Run:
    """A run from a finished rollout, its latest attempt's spans and their calls (``TraceToMessages().adapt``)."""
    reward = final_reward(spans)
    errors = [
        f"{span.attributes.get(semconv.EXCEPTION_TYPE, 'Error')}: {span.attributes.get(semconv.EXCEPTION_MESSAGE, '')}"
        for span in spans
        if span.name == semconv.SPAN_EXCEPTION
    ]
    return Run(
        rollout_id=rollout.rollout_id,
        task=rollout.input,
        reward=missing_reward if reward is None or rollout.status != RolloutStatus.SUCCEEDED else reward,
        status=rollout.status,
        errors=errors,
        calls=calls,
    )


def render_runs(runs: Sequence[Run], max_chars: int, message_max_chars: int) -> str:
    """The runs as text, lowest reward first, cut off (with a note saying how many were left out) at ``max_chars``."""
    ordered = sorted(runs, key=lambda run: run.reward)
    parts: list[str] = []
    used = 0
    for index, run in enumerate(ordered):
        text = _render_run(index + 1, run, message_max_chars)
        if parts and used + len(text) > max_chars:
            parts.append(f"({len(ordered) - index} more run(s) left out for length.)")
            break
        parts.append(text[:max_chars] if not parts else text)
        used += len(text)
    return "\n\n".join(parts) if parts else "(no runs)"


def _render_run(number: int, run: Run, width: int) -> str:
    status = "succeeded" if run.status == RolloutStatus.SUCCEEDED else f"FAILED ({run.status.value})"
    lines = [f"### Run {number}: reward {run.reward:g}, {status}", f"Task: {_short(_json(run.task), width)}"]
    for error in run.errors:
        lines.append(f"Error: {_short(error, width)}")
    if not run.calls:
        lines.append("(no LLM call of the agent was recorded)")
    for call_number, call in enumerate(run.calls, start=1):
        agent = f" by agent {call.agent_name}" if call.agent_name else ""
        lines.append(f"LLM call {call_number}{agent}:")
        lines.extend(f"  {_message(message, width)}" for message in call.messages)
    return "\n".join(lines)


def _message(message: Any, width: int) -> str:
    """One OpenAI-style message on a line: ``role: content``, then its tool calls."""
    if not isinstance(message, dict):
        return f"(unparsed) {_short(str(message), width)}"
    role = str(message.get("role") or "?")
    if role == "tool":
        call_id = message.get("tool_call_id")
        role = f"tool result ({call_id})" if call_id else "tool result"
    text = f"{role}: {_short(_content(message.get('content')), width)}"
    for tool_call in message.get("tool_calls") or []:
        function = tool_call.get("function", {}) if isinstance(tool_call, dict) else {}
        name = function.get("name", "?") if isinstance(function, dict) else "?"
        arguments = function.get("arguments", "") if isinstance(function, dict) else ""
        text += f"\n    calls tool {name}({_short(str(arguments), width)})"
    return text


def _content(content: Any) -> str:
    """Message content as text: a string, or the text parts of a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) if isinstance(part, dict) else str(part) for part in content).strip()
    return _json(content)


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _short(text: str, width: int) -> str:
    text = text.strip()
    return text if len(text) <= width else text[: width - 1] + "…"
