"""The recorder: AutoGen's model calls, tool calls and team runs as spans of the active rollout.

AutoGen AgentChat traces itself with OpenTelemetry: each agent invocation (``run``, ``run_stream``, and each turn
of an agent in a team) is an ``invoke_agent <name>`` span with ``gen_ai.agent.name``, each tool call an
``execute_tool <name>`` span, and the runtime traces the messages its agents exchange. Inside a rollout the core
records every OpenTelemetry span in that rollout, so these spans are there without this package. What AutoGen does
not record is the model call, which is what training needs; the recorder adds it, named after the agent making it,
and adds the arguments and results of tool calls and a span per team run.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import inspect
import logging
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from autogen_agentchat.base import TaskResult
from autogen_core import CancellationToken, MessageHandlerContext
from autogen_core.models import CreateResult
from autogen_core.tools import FunctionTool
from opentelemetry import trace

from agentlightning import semconv
from agentlightning.tracer import active_rollout, attribute_text, begin_span, propagate_traceparent
from agentlightning.tracer.runs import Run, current_run, enter_run, leave_run
from agentlightning.types import SpanKind
from agentlightning_autogen._messages import request_attributes, response_attributes

__all__ = [
    "TEAM_NAME",
    "TEAM_PARTICIPANTS",
    "TEAM_STOP_REASON",
    "TEAM_TYPE",
    "LightningRecorder",
    "agent_name_here",
]

log = logging.getLogger("agentlightning.autogen")

#: On a team run's span: the team's name, its class (``RoundRobinGroupChat``, ``SelectorGroupChat``, ``Swarm``…),
#: its participants' names, and why it stopped.
TEAM_NAME = "autogen.team.name"
TEAM_TYPE = "autogen.team.type"
TEAM_PARTICIPANTS = "autogen.team.participants"
TEAM_STOP_REASON = "autogen.team.stop_reason"
_TOOL_DESCRIPTION = "gen_ai.tool.description"


def agent_name_here() -> str | None:
    """The AutoGen agent whose code runs here, the first of:

    1. the agent of the span current here when it names one: AutoGen's ``invoke_agent`` span, current while an
       agent runs (standalone, or its turn in a team), or a span of this package inside it (a tool call);
    2. the runtime agent handling the message being processed here: inside a team, a participant, or the team's
       manager (``SelectorGroupChatManager`` when the selector asks the model who speaks next), named as the team
       names it (AgentChat registers them as ``<name>_<team id>``);
    3. ``None``: no agent (a model called directly, outside any agent).
    """
    span = trace.get_current_span()
    agent = getattr(span, "agentlightning_agent", None)
    if isinstance(agent, str) and agent:
        return agent
    attributes = getattr(span, "attributes", None)  # an SDK span: AutoGen's own
    if attributes is not None:
        agent = attributes.get(semconv.GEN_AI_AGENT_NAME)
        if isinstance(agent, str) and agent:
            return agent
    try:
        agent_id = MessageHandlerContext.agent_id()
    except RuntimeError:  # not inside the runtime's handling of a message
        return None
    suffix = f"_{agent_id.key}"
    return agent_id.type[: -len(suffix)] if agent_id.type.endswith(suffix) else agent_id.type


def _model_of(client: Any) -> tuple[str | None, Mapping[str, Any]]:
    """The model name and create arguments an OpenAI-style AutoGen client sends with every request."""
    create_args = getattr(client, "_create_args", None)
    if not isinstance(create_args, Mapping):
        return None, {}
    model = create_args.get("model")
    return (model if isinstance(model, str) else None), create_args


def _recording_a_call() -> bool:
    """Whether a model call is being recorded here already (a recorded client wrapping another)."""
    run = current_run()
    return (
        run is not None
        and run.span.kind == SpanKind.CLIENT
        and run.span.attributes.get(semconv.GEN_AI_OPERATION_NAME) == semconv.GEN_AI_OPERATION_CHAT
    )


def recording_tool(tool_name: str) -> bool:
    """Whether the recorder has opened the span of a call of ``tool_name`` here (so AutoGen need not)."""
    run = current_run()
    return (
        run is not None
        and run.span.attributes.get(semconv.GEN_AI_OPERATION_NAME) == semconv.GEN_AI_OPERATION_EXECUTE_TOOL
        and run.span.attributes.get(semconv.GEN_AI_TOOL_NAME) == tool_name
    )


def _in_this_context(tool: Any) -> Any:
    """``tool``, or for a function tool of a plain (not ``async``) function, a copy of it that runs the function in
    a copy of the context here: AutoGen runs such functions in the event loop's thread pool, which starts them
    in an empty context, outside the rollout and the tool call's span, where ``agl.emit_reward`` fails."""
    if not isinstance(tool, FunctionTool):
        return tool
    function = getattr(tool, "_func", None)
    if function is None or inspect.iscoroutinefunction(function):
        return tool
    carrying = copy.copy(tool)
    carrying._func = functools.partial(contextvars.copy_context().run, function)
    return carrying


def _error_attributes(error: BaseException) -> dict[str, Any]:
    return {semconv.ERROR_TYPE: type(error).__qualname__}


def _message(error: BaseException) -> str:
    return str(error) or type(error).__qualname__


class LightningRecorder:
    """Records AutoGen's model calls, tool calls and team runs as spans of the active rollout.

    :func:`agentlightning_autogen.instrument` routes every OpenAI-style model client, tool and team of the process
    through one recorder; :class:`~agentlightning_autogen.LightningChatCompletionClient` routes one model client's
    calls through one. Outside a rollout nothing is recorded.

    - A model call is a ``chat <model>`` span (CLIENT) with the request's messages, tools and sampling parameters,
      the answer, the finish reason and usage (or the error), and ``gen_ai.agent.name``
      (:func:`agent_name_here`). It is the current span while the request is sent, so the request carries its
      ``traceparent`` and agent name to the gateway, which nests its span of the call (with the token ids) under it.
    - A tool call is an ``execute_tool <name>`` span with the arguments, the result, the call id and the agent;
      rewards emitted inside the tool become its children.
    - A team run is a ``team <name>`` span; the runtime's and the agents' spans hang below it.

    A failure inside the recorder is logged on the ``agentlightning.autogen`` logger and counted in
    :attr:`errors`; it never reaches the agent's run.
    """

    def __init__(self) -> None:
        #: How many times recording failed (each one is logged).
        self.errors = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(errors={self.errors})"

    def _failed(self, what: str) -> None:
        with self._lock:
            self.errors += 1
        log.exception("LightningRecorder could not record %s; the run goes on without it", what)

    # --- spans ----------------------------------------------------------------------------------------------

    def _begin(self, name: str, attributes: dict[str, Any], kind: SpanKind = SpanKind.INTERNAL) -> Run | None:
        opened = begin_span(name, attributes=attributes, kind=kind)
        if opened is None:
            return None
        run = Run(opened)
        enter_run(run)
        return run

    def _end(self, run: Run, attributes: dict[str, Any], error: BaseException | None, what: str) -> None:
        try:
            leave_run(run)
            if error is not None:
                attributes.update(_error_attributes(error))
                run.span.end(attributes, error=_message(error))
            else:
                run.span.end(attributes)
        except Exception:
            self._failed(what)

    # --- model calls ----------------------------------------------------------------------------------------

    def _begin_call(self, client: Any, messages: Sequence[Any], kwargs: Mapping[str, Any]) -> Run | None:
        if active_rollout() is None:
            return None
        try:
            if _recording_a_call():
                return None
            propagate_traceparent()
            model, create_args = _model_of(client)
            extra = kwargs.get("extra_create_args") or {}
            attributes = request_attributes(
                model, messages, kwargs.get("tools") or (), {**create_args, **extra} if extra else create_args
            )
            agent = agent_name_here()
            if agent is not None:
                attributes[semconv.GEN_AI_AGENT_NAME] = agent
            name = f"{semconv.GEN_AI_OPERATION_CHAT} {model}" if model else semconv.GEN_AI_OPERATION_CHAT
            return self._begin(name, attributes, SpanKind.CLIENT)
        except Exception:
            self._failed("a model call")
            return None

    def _end_call(self, run: Run, result: CreateResult | None, error: BaseException | None) -> None:
        try:
            attributes = response_attributes(result) if result is not None else {}
        except Exception:
            self._failed("a model call's result")
            attributes = {}
        self._end(run, attributes, error, "a model call")

    async def create(
        self,
        client: Any,
        create: Callable[..., Awaitable[CreateResult]],
        messages: Sequence[Any],
        /,
        **kwargs: Any,
    ) -> CreateResult:
        """Call ``create(messages, **kwargs)`` (a model client's ``create``) and record it; ``client`` is the model
        client whose model name and create arguments are recorded."""
        run = self._begin_call(client, messages, kwargs)
        if run is None:
            return await create(messages, **kwargs)
        try:
            result = await create(messages, **kwargs)
        except BaseException as error:
            self._end_call(run, None, error)
            raise
        self._end_call(run, result, None)
        return result

    async def create_stream(
        self,
        client: Any,
        create_stream: Callable[..., AsyncGenerator[str | CreateResult, None]],
        messages: Sequence[Any],
        /,
        **kwargs: Any,
    ) -> AsyncGenerator[str | CreateResult, None]:
        """Stream ``create_stream(messages, **kwargs)`` and record it as one call, ended by its ``CreateResult``."""
        run = self._begin_call(client, messages, kwargs)
        if run is None:
            async for item in create_stream(messages, **kwargs):
                yield item
            return
        result: CreateResult | None = None
        error: BaseException | None = None
        try:
            async for item in create_stream(messages, **kwargs):
                if isinstance(item, CreateResult):
                    result = item
                yield item
        except GeneratorExit:  # the caller stopped reading: not a failure of the call
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._end_call(run, result, error)

    # --- tool calls -----------------------------------------------------------------------------------------

    def _begin_tool(self, tool: Any, args: Mapping[str, Any], call_id: str | None) -> Run | None:
        if active_rollout() is None:
            return None
        try:
            name = str(tool.name)
            attributes: dict[str, Any] = {
                semconv.GEN_AI_OPERATION_NAME: semconv.GEN_AI_OPERATION_EXECUTE_TOOL,
                semconv.GEN_AI_TOOL_NAME: name,
                semconv.GEN_AI_TOOL_CALL_ARGUMENTS: attribute_text(dict(args)),
            }
            if call_id is not None:
                attributes[semconv.GEN_AI_TOOL_CALL_ID] = call_id
            description = getattr(tool, "description", None)
            if isinstance(description, str) and description:
                attributes[_TOOL_DESCRIPTION] = description
            agent = agent_name_here()
            if agent is not None:
                attributes[semconv.GEN_AI_AGENT_NAME] = agent
            return self._begin(f"{semconv.GEN_AI_OPERATION_EXECUTE_TOOL} {name}", attributes)
        except Exception:
            self._failed("a tool call")
            return None

    def _end_tool(self, run: Run, tool: Any, result: Any, error: BaseException | None) -> None:
        attributes: dict[str, Any] = {}
        if error is None:
            try:
                attributes[semconv.GEN_AI_TOOL_CALL_RESULT] = attribute_text(tool.return_value_as_string(result))
            except Exception:
                self._failed("a tool call's result")
        self._end(run, attributes, error, "a tool call")

    async def run_tool(
        self,
        tool: Any,
        run_json: Callable[..., Awaitable[Any]],
        args: Mapping[str, Any],
        cancellation_token: CancellationToken,
        call_id: str | None = None,
        /,
    ) -> Any:
        """Call ``run_json(tool, args, cancellation_token, call_id=call_id)`` (``BaseTool.run_json``) and record
        it."""
        if active_rollout() is None:
            return await run_json(tool, args, cancellation_token, call_id=call_id)
        run = self._begin_tool(tool, args, call_id)
        try:
            target = _in_this_context(tool)
        except Exception:
            self._failed("a tool call's context")
            target = tool
        try:
            result = await run_json(target, args, cancellation_token, call_id=call_id)
        except BaseException as error:
            if run is not None:
                self._end_tool(run, tool, None, error)
            raise
        if run is not None:
            self._end_tool(run, tool, result, None)
        return result

    async def run_tool_stream(
        self,
        tool: Any,
        run_json_stream: Callable[..., AsyncGenerator[Any, None]],
        args: Mapping[str, Any],
        cancellation_token: CancellationToken,
        call_id: str | None = None,
        /,
    ) -> AsyncGenerator[Any, None]:
        """Stream ``run_json_stream(tool, args, cancellation_token, call_id=call_id)``
        (``BaseStreamTool.run_json_stream``) and record it; its last item is the tool's result."""
        run = self._begin_tool(tool, args, call_id)
        if run is None:
            async for item in run_json_stream(tool, args, cancellation_token, call_id=call_id):
                yield item
            return
        last: Any = None
        error: BaseException | None = None
        try:
            async for item in run_json_stream(tool, args, cancellation_token, call_id=call_id):
                last = item
                yield item
        except GeneratorExit:
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._end_tool(run, tool, last, error)

    # --- team runs ------------------------------------------------------------------------------------------

    def _begin_team(self, team: Any) -> Run | None:
        if active_rollout() is None:
            return None
        try:
            name = str(team.name)
            attributes: dict[str, Any] = {TEAM_NAME: name, TEAM_TYPE: type(team).__name__}
            participants = getattr(team, "_participant_names", None)
            if isinstance(participants, list):
                attributes[TEAM_PARTICIPANTS] = [str(p) for p in participants]
            return self._begin(f"team {name}", attributes)
        except Exception:
            self._failed("a team run")
            return None

    async def run_team_stream(
        self,
        team: Any,
        run_stream: Callable[..., AsyncGenerator[Any, None]],
        /,
        *args: Any,
        **kwargs: Any,
    ) -> AsyncGenerator[Any, None]:
        """Stream ``run_stream(team, *args, **kwargs)`` (``BaseGroupChat.run_stream``) and record the run; it ends
        with its ``TaskResult``."""
        run = self._begin_team(team)
        if run is None:
            async for item in run_stream(team, *args, **kwargs):
                yield item
            return
        stop_reason: Any = None
        error: BaseException | None = None
        try:
            async for item in run_stream(team, *args, **kwargs):
                if isinstance(item, TaskResult):
                    stop_reason = item.stop_reason
                yield item
        except GeneratorExit:
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._end(run, {TEAM_STOP_REASON: str(stop_reason)} if stop_reason else {}, error, "a team run")
