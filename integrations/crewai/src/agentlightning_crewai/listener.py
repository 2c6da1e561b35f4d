"""The listener: CrewAI's events as spans of the active rollout.

CrewAI reports what a crew does on its event bus: a crew's kickoff, each task, each agent's execution of a task,
each LLM call (with its messages, tools, answer, usage and response id, or its error) and each tool use, every one
a started / completed (or failed) pair. The bus hands events to its handlers in a thread pool, after the fact
(and in CrewAI 1.0 outside the emitting code's context, so outside its rollout), which is too late for what a run
needs recorded *while it runs*: the LLM call's span current when its request is sent (so the request carries its
``traceparent`` and agent to the gateway), and the tool's span current while the tool runs (so a reward emitted
there is its child). So the listener takes each event where it is emitted, on the agent's thread, before the
bus's handlers see it (:func:`agentlightning_crewai.instrument` sees to that): a span is opened and made current
when something starts, and ended when it ends, in the same context, so nothing is left to finish off-thread when
the rollout ends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from crewai.events.types.agent_events import (
    AgentExecutionCompletedEvent,
    AgentExecutionErrorEvent,
    AgentExecutionStartedEvent,
)
from crewai.events.types.crew_events import (
    CrewKickoffCompletedEvent,
    CrewKickoffFailedEvent,
    CrewKickoffStartedEvent,
)
from crewai.events.types.llm_events import LLMCallCompletedEvent, LLMCallFailedEvent, LLMCallStartedEvent
from crewai.events.types.task_events import TaskCompletedEvent, TaskFailedEvent, TaskStartedEvent
from crewai.events.types.tool_usage_events import (
    ToolUsageErrorEvent,
    ToolUsageFinishedEvent,
    ToolUsageStartedEvent,
)
from opentelemetry import trace

from agentlightning import semconv
from agentlightning.tracer import active_rollout, attribute_text, begin_span, propagate_traceparent
from agentlightning.tracer.runs import Run, current_run, enter_run, leave_run
from agentlightning.types import SpanKind

__all__ = [
    "CREW_NAME",
    "CREW_INPUTS",
    "CREW_TOTAL_TOKENS",
    "TASK_ID",
    "TASK_NAME",
    "TASK_DESCRIPTION",
    "TOOL_FROM_CACHE",
    "LightningListener",
]

log = logging.getLogger("agentlightning.crewai")

#: On a crew's span: its name, the inputs of its kickoff (JSON) and the tokens it used in all.
CREW_NAME = "crewai.crew.name"
CREW_INPUTS = "crewai.crew.inputs"
CREW_TOTAL_TOKENS = "crewai.crew.total_tokens"
#: On a task's span (and on the spans of the agent execution, LLM calls and tool uses inside it): the task.
TASK_ID = "crewai.task.id"
TASK_NAME = "crewai.task.name"
TASK_DESCRIPTION = "crewai.task.description"
#: On a tool use's span: whether CrewAI answered it from its tool cache instead of running the tool.
TOOL_FROM_CACHE = "crewai.tool.from_cache"

_CREW, _TASK, _AGENT, _LLM, _TOOL = "crew", "task", "agent", "llm", "tool"
_SAMPLING = (
    ("temperature", semconv.GEN_AI_REQUEST_TEMPERATURE),
    ("top_p", semconv.GEN_AI_REQUEST_TOP_P),
    ("max_tokens", semconv.GEN_AI_REQUEST_MAX_TOKENS),
    ("seed", semconv.GEN_AI_REQUEST_SEED),
)
_USAGE = (
    (("prompt_tokens", "input_tokens"), semconv.GEN_AI_USAGE_INPUT_TOKENS),
    (("completion_tokens", "output_tokens"), semconv.GEN_AI_USAGE_OUTPUT_TOKENS),
)


class _CrewRun(Run):
    """A recorded CrewAI run, and what it is (crew, task, agent, llm, tool): an ending event ends the innermost
    open run of its kind in the context it is emitted in, the one its starting event opened there."""

    __slots__ = ("what",)

    def __init__(self, span: Any, what: str) -> None:
        super().__init__(span)
        self.what = what


def _agent_here() -> str | None:
    """The agent of the innermost open recorded run here that names one (the core's live view of the runs)."""
    agent = getattr(trace.get_current_span(), "agentlightning_agent", None)
    return agent if isinstance(agent, str) and agent else None


def _task_attributes(event: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    task_id, task_name = getattr(event, "task_id", None), getattr(event, "task_name", None)
    if task_id:
        attributes[TASK_ID] = str(task_id)
    if task_name:
        attributes[TASK_NAME] = str(task_name)
    return attributes


def _output_message(response: Any) -> dict[str, Any]:
    """The LLM's answer as an OpenAI chat message: text, or tool calls (CrewAI's native function calling hands
    back the provider's tool calls, as dicts or objects)."""
    if isinstance(response, str):
        return {"role": "assistant", "content": response}
    if isinstance(response, list) and response:
        calls = []
        for call in response:
            data = call.model_dump() if hasattr(call, "model_dump") else call
            calls.append(data if isinstance(data, dict) else str(data))
        return {"role": "assistant", "content": None, "tool_calls": calls}
    if isinstance(response, dict) and ("content" in response or "tool_calls" in response):
        return {"role": "assistant", **response}
    return {"role": "assistant", "content": None if response is None else str(response)}


class LightningListener:
    """Records CrewAI's crews, tasks, agent executions, LLM calls and tool uses as spans of the active rollout.

    :func:`agentlightning_crewai.instrument` hands it every event CrewAI emits, where it is emitted; outside a
    rollout it records nothing. Spans nest as CrewAI's work does (crew > task > agent > LLM call / tool use), and
    each is the current OpenTelemetry span while what it records runs, so rewards emitted inside a tool become the
    tool's children and each LLM request carries its call's ``traceparent`` and agent role to the gateway.

    - A crew's kickoff is a ``crew <name>`` span; a task a ``task <name>`` span; an agent executing a task an
      ``invoke_agent <role>`` span with ``gen_ai.agent.name``.
    - An LLM call is a ``chat <model>`` span (CLIENT) with the messages, the tools offered, the sampling
      parameters, the answer, the finish reason, usage and response id (or the error), and ``gen_ai.agent.name``:
      the role of the agent that made it.
    - A tool use is an ``execute_tool <name>`` span with the arguments, the result (or the error) and the agent.

    A failure inside the listener is logged on the ``agentlightning.crewai`` logger and counted in :attr:`errors`;
    it never reaches the crew's run.
    """

    def __init__(self) -> None:
        #: How many events could not be recorded (each one is logged).
        self.errors = 0
        self._lock = threading.Lock()
        self._handlers: dict[type[Any], Callable[[Any, Any], None]] = {
            CrewKickoffStartedEvent: self._crew_started,
            CrewKickoffCompletedEvent: self._crew_completed,
            CrewKickoffFailedEvent: self._crew_failed,
            TaskStartedEvent: self._task_started,
            TaskCompletedEvent: self._task_completed,
            TaskFailedEvent: self._task_failed,
            AgentExecutionStartedEvent: self._agent_started,
            AgentExecutionCompletedEvent: self._agent_completed,
            AgentExecutionErrorEvent: self._agent_failed,
            LLMCallStartedEvent: self._llm_started,
            LLMCallCompletedEvent: self._llm_completed,
            LLMCallFailedEvent: self._llm_failed,
            ToolUsageStartedEvent: self._tool_started,
            ToolUsageFinishedEvent: self._tool_finished,
            ToolUsageErrorEvent: self._tool_failed,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(errors={self.errors})"

    def on_event(self, source: Any, event: Any) -> None:
        """Record ``event`` (emitted by ``source``), in the context it is emitted in. Events of other kinds, and
        events outside a rollout, are passed over at the cost of a dictionary lookup."""
        handler = self._handlers.get(type(event))
        if handler is None or active_rollout() is None:
            return
        try:
            handler(source, event)
        except Exception:
            with self._lock:
                self.errors += 1
            log.exception("LightningListener could not record %s; the run goes on without it", type(event).__name__)

    # --- bookkeeping ------------------------------------------------------------------------------------------

    def _begin(self, what: str, name: str, attributes: dict[str, Any], kind: SpanKind = SpanKind.INTERNAL) -> None:
        opened = begin_span(name, attributes=attributes, kind=kind)
        if opened is not None:
            enter_run(_CrewRun(opened, what))

    def _end(self, what: str, attributes: Mapping[str, Any] | None = None, error: str | None = None) -> None:
        """End the innermost open run of kind ``what`` here (and any run left open inside it, as failed)."""
        run = current_run()
        inner: list[Run] = []
        while run is not None and not (isinstance(run, _CrewRun) and run.what == what):
            inner.append(run)
            run = run.outer_run
            while run is not None and run.ended:
                run = run.outer_run
        if run is None:  # started outside a rollout, or not recorded: nothing to end
            return
        for unfinished in inner:  # its ending event never came (CrewAI emits none for some failures)
            if isinstance(unfinished, _CrewRun):
                leave_run(unfinished)
                unfinished.span.end(error=f"the enclosing {what} ended first")
        leave_run(run)
        run.span.end(attributes, error=error)

    # --- crews, tasks, agents ---------------------------------------------------------------------------------

    def _crew_started(self, source: Any, event: CrewKickoffStartedEvent) -> None:
        name = event.crew_name or "crew"
        attributes: dict[str, Any] = {CREW_NAME: name}
        if event.inputs:
            attributes[CREW_INPUTS] = attribute_text(event.inputs)
        self._begin(_CREW, f"crew {name}", attributes)

    def _crew_completed(self, source: Any, event: CrewKickoffCompletedEvent) -> None:
        total = getattr(event, "total_tokens", None)
        self._end(_CREW, {CREW_TOTAL_TOKENS: total} if isinstance(total, int) else None)

    def _crew_failed(self, source: Any, event: CrewKickoffFailedEvent) -> None:
        self._end(_CREW, {semconv.ERROR_TYPE: "CrewKickoffFailed"}, error=str(event.error) or "failed")

    def _task_started(self, source: Any, event: TaskStartedEvent) -> None:
        task = getattr(event, "task", None) or source
        attributes = _task_attributes(event)
        task_id = getattr(task, "id", None)
        if task_id is not None:
            attributes[TASK_ID] = str(task_id)
        description = getattr(task, "description", None)
        if isinstance(description, str):
            attributes[TASK_DESCRIPTION] = description
        name = getattr(task, "name", None) or attributes.get(TASK_NAME)
        if name:
            attributes[TASK_NAME] = str(name)
        self._begin(_TASK, f"task {name}" if name else "task", attributes)

    def _task_completed(self, source: Any, event: TaskCompletedEvent) -> None:
        self._end(_TASK)

    def _task_failed(self, source: Any, event: TaskFailedEvent) -> None:
        self._end(_TASK, {semconv.ERROR_TYPE: "TaskFailed"}, error=str(event.error) or "failed")

    def _agent_started(self, source: Any, event: AgentExecutionStartedEvent) -> None:
        agent = event.agent
        role = str(agent.role)
        attributes: dict[str, Any] = {
            semconv.GEN_AI_OPERATION_NAME: semconv.GEN_AI_OPERATION_INVOKE_AGENT,
            semconv.GEN_AI_AGENT_NAME: role,
            semconv.GEN_AI_AGENT_ID: str(agent.id),
        }
        task_id = getattr(event.task, "id", None)
        if task_id is not None:
            attributes[TASK_ID] = str(task_id)
        self._begin(_AGENT, f"{semconv.GEN_AI_OPERATION_INVOKE_AGENT} {role}", attributes)

    def _agent_completed(self, source: Any, event: AgentExecutionCompletedEvent) -> None:
        self._end(_AGENT)

    def _agent_failed(self, source: Any, event: AgentExecutionErrorEvent) -> None:
        self._end(_AGENT, {semconv.ERROR_TYPE: "AgentExecutionError"}, error=str(event.error) or "failed")

    # --- LLM calls --------------------------------------------------------------------------------------------

    def _llm_started(self, source: Any, event: LLMCallStartedEvent) -> None:
        propagate_traceparent()
        model = event.model or getattr(source, "model", None)
        attributes: dict[str, Any] = {semconv.GEN_AI_OPERATION_NAME: semconv.GEN_AI_OPERATION_CHAT}
        if model:
            attributes[semconv.GEN_AI_REQUEST_MODEL] = str(model)
        provider = getattr(source, "provider", None)
        if isinstance(provider, str) and provider:
            attributes[semconv.GEN_AI_PROVIDER_NAME] = provider
        messages = event.messages
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        if messages is not None:
            attributes[semconv.GEN_AI_INPUT_MESSAGES] = attribute_text(messages)
        if event.tools:
            attributes[semconv.GEN_AI_TOOL_DEFINITIONS] = attribute_text(event.tools)
        for field, name in _SAMPLING:
            value = getattr(event, field, None)
            if value is None:
                value = getattr(source, field, None)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attributes[name] = value
        agent = event.agent_role or _agent_here()
        if agent:
            attributes[semconv.GEN_AI_AGENT_NAME] = str(agent)
        attributes.update(_task_attributes(event))
        name = f"{semconv.GEN_AI_OPERATION_CHAT} {model}" if model else semconv.GEN_AI_OPERATION_CHAT
        self._begin(_LLM, name, attributes, SpanKind.CLIENT)

    def _llm_completed(self, source: Any, event: LLMCallCompletedEvent) -> None:
        attributes: dict[str, Any] = {semconv.GEN_AI_OUTPUT_MESSAGES: attribute_text([_output_message(event.response)])}
        response_id = getattr(event, "response_id", None)
        if isinstance(response_id, str) and response_id:
            attributes[semconv.GEN_AI_RESPONSE_ID] = response_id
        finish_reason = getattr(event, "finish_reason", None)
        if isinstance(finish_reason, str) and finish_reason:
            attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] = [finish_reason]
        usage = getattr(event, "usage", None)
        if isinstance(usage, Mapping):
            for keys, name in _USAGE:
                value = next((usage[k] for k in keys if isinstance(usage.get(k), int)), None)
                if value is not None:
                    attributes[name] = value
        self._end(_LLM, attributes)

    def _llm_failed(self, source: Any, event: LLMCallFailedEvent) -> None:
        self._end(_LLM, {semconv.ERROR_TYPE: "LLMCallFailed"}, error=str(event.error) or "failed")

    # --- tool uses --------------------------------------------------------------------------------------------

    def _tool_started(self, source: Any, event: ToolUsageStartedEvent) -> None:
        name = str(event.tool_name)
        attributes: dict[str, Any] = {
            semconv.GEN_AI_OPERATION_NAME: semconv.GEN_AI_OPERATION_EXECUTE_TOOL,
            semconv.GEN_AI_TOOL_NAME: name,
            semconv.GEN_AI_TOOL_CALL_ARGUMENTS: attribute_text(event.tool_args),
        }
        agent = event.agent_role or _agent_here()
        if agent:
            attributes[semconv.GEN_AI_AGENT_NAME] = str(agent)
        attributes.update(_task_attributes(event))
        self._begin(_TOOL, f"{semconv.GEN_AI_OPERATION_EXECUTE_TOOL} {name}", attributes)

    def _tool_finished(self, source: Any, event: ToolUsageFinishedEvent) -> None:
        attributes: dict[str, Any] = {semconv.GEN_AI_TOOL_CALL_RESULT: attribute_text(event.output)}
        if getattr(event, "from_cache", False):
            attributes[TOOL_FROM_CACHE] = True
        self._end(_TOOL, attributes)

    def _tool_failed(self, source: Any, event: ToolUsageErrorEvent) -> None:
        self._end(_TOOL, {semconv.ERROR_TYPE: "ToolUsageError"}, error=str(event.error) or "failed")
