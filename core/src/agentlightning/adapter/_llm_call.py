"""Reading the attributes of an LLM-call span, tolerating whatever a recorder wrote.

Spans come from the gateway, from integrations, and from OTLP exporters in other languages; one
malformed attribute must not cost a whole trajectory. Every reader here returns ``None`` (or the
raw value, for messages) instead of raising, and says why at debug level.
"""

from __future__ import annotations

import json
import logging

from pydantic import JsonValue

from agentlightning import semconv
from agentlightning.types import Span, StatusCode

__all__ = ["is_llm_call", "read_messages", "read_tools", "read_token_ids", "read_logprobs", "read_str"]

log = logging.getLogger("agentlightning.adapter")

_LLM_OPERATIONS = frozenset({semconv.GEN_AI_OPERATION_CHAT, semconv.GEN_AI_OPERATION_TEXT_COMPLETION})


def is_llm_call(span: Span) -> bool:
    """Whether the span records one answered LLM call (``gen_ai.operation.name`` is ``chat`` or
    ``text_completion``, and it did not fail: a failed call produced no tokens to learn from)."""
    return (
        span.attributes.get(semconv.GEN_AI_OPERATION_NAME) in _LLM_OPERATIONS
        and span.status.status_code != StatusCode.ERROR
    )


def read_messages(span: Span, key: str) -> list[JsonValue]:
    """The messages a JSON attribute holds; text that is not JSON is kept as one plain string message.

    A JSON list gives its items, any other JSON value one item. An attribute that is a list of
    strings (as some OpenTelemetry exporters write it) gives one message per string.
    """
    value = span.attributes.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        try:
            decoded = _loads(value)
        except ValueError:
            log.debug("span %s: %s is not JSON; keeping it as one plain string message", span.span_id, key)
            return [value]
        return decoded if isinstance(decoded, list) else [decoded]
    if isinstance(value, list):
        return [_loads_or_keep(item) for item in value]
    log.debug("span %s: %s is a %s, not JSON text; skipping it", span.span_id, key, type(value).__name__)
    return []


def read_tools(span: Span) -> list[JsonValue] | None:
    """The tool definitions offered to the model, or ``None`` when none were recorded or they are not JSON.

    Unlike messages, tool definitions that cannot be decoded are dropped: a chat template fed a
    string where it expects a function schema would fail far from here.
    """
    value = span.attributes.get(semconv.GEN_AI_TOOL_DEFINITIONS)
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    tools: list[JsonValue] = []
    decoded_any = False
    for item in items:
        if not isinstance(item, str):
            log.debug("span %s: tool definitions hold a %s; skipping it", span.span_id, type(item).__name__)
            continue
        try:
            decoded = _loads(item)
        except ValueError:
            log.debug("span %s: tool definitions are not JSON; skipping them", span.span_id)
            continue
        decoded_any = True
        if isinstance(decoded, list):
            tools.extend(decoded)
        else:
            tools.append(decoded)
    return tools if decoded_any else None


def read_token_ids(span: Span, key: str) -> list[int] | None:
    """A list of token ids, or ``None`` if absent or not a list of integers."""
    value = span.attributes.get(key)
    if value is None:
        return None
    # ``type(...) is int``: a bool is an int to isinstance, never a token id. map/set run at C speed,
    # which matters: an attempt can hold hundreds of calls with thousands of tokens each.
    if isinstance(value, list) and set(map(type, value)) <= {int}:
        return list(value)  # type: ignore[arg-type]  # every item's type is int
    log.debug("span %s: %s is not a list of integers; dropping it", span.span_id, key)
    return None


def read_logprobs(span: Span) -> list[float] | None:
    """The completion logprobs, or ``None`` if absent or not a list of numbers."""
    value = span.attributes.get(semconv.AGL_COMPLETION_LOGPROBS)
    if value is None:
        return None
    if isinstance(value, list):
        types = set(map(type, value))
        if types <= {float}:
            return list(value)  # type: ignore[arg-type]  # every item's type is float
        if types <= {float, int}:
            return [float(item) for item in value]
    log.debug("span %s: %s is not a list of numbers; dropping it", span.span_id, semconv.AGL_COMPLETION_LOGPROBS)
    return None


def read_str(span: Span, key: str) -> str | None:
    """A non-empty string attribute, or ``None``."""
    value = span.attributes.get(key)
    return value if isinstance(value, str) and value else None


def _loads(text: str) -> JsonValue:
    try:
        decoded: JsonValue = json.loads(text)
    except RecursionError as exc:  # absurdly deep nesting: as unusable as bad JSON
        raise ValueError("JSON nested too deep") from exc
    return decoded


def _loads_or_keep(item: str | bool | int | float) -> JsonValue:
    if not isinstance(item, str):
        return item
    try:
        return _loads(item)
    except ValueError:
        return item
