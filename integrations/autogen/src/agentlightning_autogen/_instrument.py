"""``instrument()`` / ``uninstrument()``: AutoGen's model clients, tools and teams through one recorder, and back.

Four methods are replaced, on the base classes every concrete one inherits them from, and one name:

- ``BaseOpenAIChatCompletionClient.create`` / ``.create_stream`` (autogen-ext): the model calls of
  ``OpenAIChatCompletionClient`` and ``AzureOpenAIChatCompletionClient``, the clients that reach the gateway;
- ``BaseTool.run_json`` / ``BaseStreamTool.run_json_stream`` (autogen-core): every tool call an agent makes
  (function tools, ``AgentTool`` / ``TeamTool``, handoffs), with its arguments and result;
- ``BaseGroupChat.run_stream`` (AgentChat; ``run`` calls it): team runs;
- ``trace_tool_span`` where ``BaseTool`` calls it: AutoGen's own span of a tool call, which would duplicate the
  recorder's, is not opened while the recorder records that call.

Agent invocations are AutoGen's own ``invoke_agent`` spans (see :mod:`agentlightning_autogen.recorder`).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import autogen_core.tools._base as tools_module
from autogen_agentchat.teams import BaseGroupChat
from autogen_core import CancellationToken
from autogen_core.models import CreateResult
from autogen_core.tools import BaseStreamTool, BaseTool
from autogen_ext.models.openai import BaseOpenAIChatCompletionClient
from opentelemetry import trace

from agentlightning_autogen.recorder import LightningRecorder, recording_tool

__all__ = ["instrument", "instrumented_recorder", "uninstrument"]

_lock = threading.Lock()
_recorder: LightningRecorder | None = None
# (owner, attribute, original) of everything replaced, to put back.
_replaced: list[tuple[Any, str, Any]] = []

_create = BaseOpenAIChatCompletionClient.create
_create_stream = BaseOpenAIChatCompletionClient.create_stream
_run_json = BaseTool.run_json
_run_json_stream = BaseStreamTool.run_json_stream
_run_stream = BaseGroupChat.run_stream
# Imported there from autogen_core._telemetry; replaced there, where BaseTool looks it up.
_trace_tool_span = tools_module.__dict__["trace_tool_span"]


async def _recorded_create(self: Any, messages: Sequence[Any], **kwargs: Any) -> CreateResult:
    recorder = _recorder
    if recorder is None:  # a reference kept from before uninstrument()
        return await _create(self, messages, **kwargs)
    return await recorder.create(self, _create.__get__(self), messages, **kwargs)


def _recorded_create_stream(
    self: Any, messages: Sequence[Any], **kwargs: Any
) -> AsyncGenerator[str | CreateResult, None]:
    recorder = _recorder
    if recorder is None:
        return _create_stream(self, messages, **kwargs)
    return recorder.create_stream(self, _create_stream.__get__(self), messages, **kwargs)


async def _recorded_run_json(
    self: Any, args: Mapping[str, Any], cancellation_token: CancellationToken, call_id: str | None = None
) -> Any:
    recorder = _recorder
    if recorder is None:
        return await _run_json(self, args, cancellation_token, call_id=call_id)
    return await recorder.run_tool(self, _run_json, args, cancellation_token, call_id)


def _recorded_run_json_stream(
    self: Any, args: Mapping[str, Any], cancellation_token: CancellationToken, call_id: str | None = None
) -> AsyncGenerator[Any, None]:
    recorder = _recorder
    if recorder is None:
        return _run_json_stream(self, args, cancellation_token, call_id=call_id)
    return recorder.run_tool_stream(self, _run_json_stream, args, cancellation_token, call_id)


def _recorded_run_stream(self: Any, /, *args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
    recorder = _recorder
    if recorder is None:
        return _run_stream(self, *args, **kwargs)
    return recorder.run_team_stream(self, _run_stream, *args, **kwargs)


@contextmanager
def _tool_span_unless_recorded(tool_name: str, **kwargs: Any) -> Iterator[trace.Span]:
    if recording_tool(tool_name):  # the recorder's span of this call is current: keep it current inside
        yield trace.get_current_span()
        return
    with _trace_tool_span(tool_name, **kwargs) as span:
        yield span


def instrument() -> LightningRecorder:
    """Record every AutoGen run in this process (inside a rollout) with one :class:`LightningRecorder`, which is
    returned: the model calls of every OpenAI-style model client (named after the agent making them), every tool
    call with its arguments and result, every team run. Calling it again changes nothing."""
    global _recorder
    with _lock:
        if _recorder is None:
            for owner, name, replacement in (
                (BaseOpenAIChatCompletionClient, "create", _recorded_create),
                (BaseOpenAIChatCompletionClient, "create_stream", _recorded_create_stream),
                (BaseTool, "run_json", _recorded_run_json),
                (BaseStreamTool, "run_json_stream", _recorded_run_json_stream),
                (BaseGroupChat, "run_stream", _recorded_run_stream),
                (tools_module, "trace_tool_span", _tool_span_unless_recorded),
            ):
                _replaced.append((owner, name, owner.__dict__[name]))
                setattr(owner, name, replacement)
            _recorder = LightningRecorder()
        return _recorder


def uninstrument() -> None:
    """Undo :func:`instrument`: AutoGen's methods are what they were. Calling it when not instrumented changes
    nothing. Clients wrapped in :class:`~agentlightning_autogen.LightningChatCompletionClient` still record."""
    global _recorder
    with _lock:
        while _replaced:
            owner, name, original = _replaced.pop()
            setattr(owner, name, original)
        _recorder = None


def instrumented_recorder() -> LightningRecorder | None:
    """The recorder :func:`instrument` routes AutoGen through, or ``None`` when not instrumented."""
    return _recorder
