"""The tracing processor: the OpenAI Agents SDK's traces and spans as spans of the active rollout."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from agents.tracing import TracingProcessor

from agentlightning import semconv
from agentlightning.tracer import attribute_text, begin_span, propagate_traceparent
from agentlightning.tracer.runs import Run, enter_run, leave_run
from agentlightning.types import SpanKind

if TYPE_CHECKING:
    from agents.tracing import Span as SDKSpan
    from agents.tracing import Trace

__all__ = [
    "AGENTS_SPAN_TYPE",
    "HANDOFF_FROM",
    "HANDOFF_TO",
    "GUARDRAIL_NAME",
    "GUARDRAIL_TRIGGERED",
    "TURN",
    "WORKFLOW_NAME",
    "LightningTracingProcessor",
]

log = logging.getLogger("agentlightning.openai_agents")

#: What the SDK called the span: ``trace``, ``agent``, ``generation``, ``response``, ``function``, ``handoff``,
#: ``guardrail``, ``custom``, ``task``, ``turn``…
AGENTS_SPAN_TYPE = "openai_agents.span.type"
#: On the trace's span: the workflow's name (``RunConfig.workflow_name``).
WORKFLOW_NAME = "openai_agents.workflow.name"
#: On a handoff's span: the agent that handed off and the one that took over.
HANDOFF_FROM = "openai_agents.handoff.from"
HANDOFF_TO = "openai_agents.handoff.to"
#: On a guardrail's span: its name and whether its tripwire was triggered.
GUARDRAIL_NAME = "openai_agents.guardrail.name"
GUARDRAIL_TRIGGERED = "openai_agents.guardrail.triggered"
#: On a turn's span (SDK 0.24 and later): the turn's number.
TURN = "openai_agents.turn"


class LightningTracingProcessor(TracingProcessor):
    """Records the OpenAI Agents SDK's traces and spans as spans of the active rollout.

    Register it with :func:`agentlightning_openai_agents.instrument` (which also removes the SDK's exporter to
    OpenAI), or yourself with ``agents.add_trace_processor`` / ``agents.set_trace_processors``. Outside a rollout
    it records nothing. A trace becomes a workflow span; agent runs, turns, generations, function tools,
    handoffs, guardrails and custom spans become its descendants, with the SDK's parent/child structure. Every
    LLM call's span carries ``gen_ai.agent.name``: the agent whose run made it (after a handoff, the agent handed
    to). While a span is open it is the current OpenTelemetry span where the SDK runs its work, so rewards
    emitted inside a tool become its children and the model's requests carry its ``traceparent`` and agent name
    to the gateway.

    A failure inside the processor is logged on the ``agentlightning.openai_agents`` logger and counted in
    :attr:`errors`; it never reaches the agent's run.
    """

    def __init__(self) -> None:
        #: How many callbacks failed inside the processor (each one is logged).
        self.errors = 0
        self._lock = threading.Lock()
        # SDK trace or span id -> the run recording it, and its agent's name.
        self._runs: dict[str, tuple[Run, str | None]] = {}
        self._warned_no_messages = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(errors={self.errors})"

    def _failed(self, callback: str) -> None:
        with self._lock:
            self.errors += 1
        log.exception("LightningTracingProcessor.%s failed; the run goes on without this span", callback)

    # --- traces -------------------------------------------------------------------------------------------

    def on_trace_start(self, trace: Trace) -> None:
        """Open the workflow's span, under whatever span is current (the rollout's)."""
        try:
            name = trace.name or "Agent workflow"
            attributes: dict[str, Any] = {AGENTS_SPAN_TYPE: "trace", WORKFLOW_NAME: name}
            self._begin(trace.trace_id, None, f"workflow {name}", attributes, None)
        except Exception:
            self._failed("on_trace_start")

    def on_trace_end(self, trace: Trace) -> None:
        """Close the workflow's span."""
        try:
            self._end(trace.trace_id, {})
        except Exception:
            self._failed("on_trace_end")

    # --- spans --------------------------------------------------------------------------------------------

    def on_span_start(self, span: SDKSpan[Any]) -> None:
        """Open the span of an agent run, a turn, a generation, a tool call, a handoff…"""
        try:
            data = span.span_data
            kind = data.type
            parent_key = span.parent_id or span.trace_id
            parent = self._runs.get(parent_key)
            agent = parent[1] if parent is not None else None
            attributes: dict[str, Any] = {AGENTS_SPAN_TYPE: kind}
            span_kind = SpanKind.INTERNAL
            if kind == "agent":
                agent = str(data.name)
                name = f"{semconv.GEN_AI_OPERATION_INVOKE_AGENT} {agent}"
                attributes[semconv.GEN_AI_OPERATION_NAME] = semconv.GEN_AI_OPERATION_INVOKE_AGENT
            elif kind == "turn":
                agent = str(getattr(data, "agent_name", None) or agent or "") or None
                name = f"turn {data.turn}"
                attributes[TURN] = int(data.turn)
            elif kind in ("generation", "response"):
                propagate_traceparent()
                model = getattr(data, "model", None)
                name = f"{semconv.GEN_AI_OPERATION_CHAT} {model}" if model else semconv.GEN_AI_OPERATION_CHAT
                attributes[semconv.GEN_AI_OPERATION_NAME] = semconv.GEN_AI_OPERATION_CHAT
                if model:
                    attributes[semconv.GEN_AI_REQUEST_MODEL] = str(model)
                span_kind = SpanKind.CLIENT
            elif kind == "function":
                name = f"{semconv.GEN_AI_OPERATION_EXECUTE_TOOL} {data.name}"
                attributes[semconv.GEN_AI_OPERATION_NAME] = semconv.GEN_AI_OPERATION_EXECUTE_TOOL
                attributes[semconv.GEN_AI_TOOL_NAME] = str(data.name)
            elif kind == "handoff":
                name = "handoff"
            elif kind == "guardrail":
                name = f"guardrail {data.name}"
                attributes[GUARDRAIL_NAME] = str(data.name)
            else:
                name = str(getattr(data, "name", None) or kind)
            if agent is not None:
                attributes[semconv.GEN_AI_AGENT_NAME] = agent
            self._begin(span.span_id, parent, name, attributes, agent, kind=span_kind)
        except Exception:
            self._failed("on_span_start")

    def on_span_end(self, span: SDKSpan[Any]) -> None:
        """Close a span with what the SDK filled in meanwhile: messages, usage, tool results, handoff target…"""
        try:
            data = span.span_data
            kind = data.type
            if kind == "generation":
                attributes = self._generation_attributes(data)
            elif kind == "response":
                attributes = self._response_attributes(data)
            elif kind == "function":
                attributes = {}
                if data.input is not None:
                    attributes[semconv.GEN_AI_TOOL_CALL_ARGUMENTS] = attribute_text(data.input)
                if data.output is not None:
                    attributes[semconv.GEN_AI_TOOL_CALL_RESULT] = attribute_text(data.output)
            elif kind == "handoff":
                attributes = {}
                if data.from_agent:
                    attributes[HANDOFF_FROM] = str(data.from_agent)
                if data.to_agent:
                    attributes[HANDOFF_TO] = str(data.to_agent)
            elif kind == "guardrail":
                attributes = {GUARDRAIL_TRIGGERED: bool(data.triggered)}
            elif kind == "agent":
                attributes = {}
                if data.tools:
                    attributes["openai_agents.agent.tools"] = [str(t) for t in data.tools]
                if data.handoffs:
                    attributes["openai_agents.agent.handoffs"] = [str(h) for h in data.handoffs]
            elif kind == "custom":
                attributes = {"openai_agents.custom.data": attribute_text(data.data)} if data.data else {}
            else:
                attributes = {}
            self._end(span.span_id, attributes, span.error)
        except Exception:
            self._failed("on_span_end")

    def shutdown(self) -> None:
        """Nothing to release: spans are written by the rollout's tracer."""

    def force_flush(self) -> None:
        """Nothing buffered here: spans go to the rollout's tracer as they end."""

    # --- bookkeeping --------------------------------------------------------------------------------------

    def _begin(
        self,
        key: str,
        parent: tuple[Run, str | None] | None,
        name: str,
        attributes: dict[str, Any],
        agent: str | None,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> None:
        """Open the span of the SDK's trace or span ``key``, a child of ``parent``'s (the rollout's current span
        when ``None``)."""
        opened = begin_span(
            name, parent=parent[0].span if parent is not None else None, attributes=attributes, kind=kind
        )
        if opened is None:  # no rollout here: nothing to record into
            return
        run = Run(opened)
        self._runs[key] = (run, agent)
        # The SDK starts a span in the context its work then runs in: make it current there.
        enter_run(run)

    def _end(self, key: str, attributes: dict[str, Any], error: Any = None) -> None:
        entry = self._runs.pop(key, None)
        if entry is None:
            return
        run = entry[0]
        leave_run(run)
        if error:
            message = error.get("message") if isinstance(error, dict) else str(error)
            attributes[semconv.ERROR_TYPE] = "AgentsSDKError"
            if isinstance(error, dict) and error.get("data"):
                attributes["openai_agents.error.data"] = attribute_text(error["data"])
            run.span.end(attributes, error=str(message or "error"))
        else:
            run.span.end(attributes)

    def _generation_attributes(self, data: Any) -> dict[str, Any]:
        attributes: dict[str, Any] = {}
        if data.input is not None:
            attributes[semconv.GEN_AI_INPUT_MESSAGES] = attribute_text(list(data.input))
        if data.output is not None:
            attributes[semconv.GEN_AI_OUTPUT_MESSAGES] = attribute_text(list(data.output))
        if data.input is None and data.output is None and not self._warned_no_messages:
            self._warned_no_messages = True
            log.warning(
                "The Agents SDK records no messages on its generation spans (trace_include_sensitive_data is off, "
                "in RunConfig or OPENAI_AGENTS_TRACE_INCLUDE_SENSITIVE_DATA): the LLM-call spans carry no messages. "
                "Training still gets them, with the token ids, from the gateway."
            )
        if data.model:
            attributes[semconv.GEN_AI_RESPONSE_MODEL] = str(data.model)
        usage = data.usage or {}
        for key, name in (
            ("input_tokens", semconv.GEN_AI_USAGE_INPUT_TOKENS),
            ("output_tokens", semconv.GEN_AI_USAGE_OUTPUT_TOKENS),
        ):
            if isinstance(usage.get(key), int):
                attributes[name] = usage[key]
        return attributes

    def _response_attributes(self, data: Any) -> dict[str, Any]:
        attributes: dict[str, Any] = {}
        response = getattr(data, "response", None)
        response_id = getattr(response, "id", None) or getattr(data, "_response_id", None)
        if isinstance(response_id, str):
            attributes[semconv.GEN_AI_RESPONSE_ID] = response_id
        model = getattr(response, "model", None)
        if isinstance(model, str):
            attributes[semconv.GEN_AI_RESPONSE_MODEL] = model
        usage = getattr(data, "usage", None) or {}
        if isinstance(usage.get("input_tokens"), int):
            attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] = usage["input_tokens"]
        if isinstance(usage.get("output_tokens"), int):
            attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] = usage["output_tokens"]
        return attributes
