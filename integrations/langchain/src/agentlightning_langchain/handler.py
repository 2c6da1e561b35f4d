"""The callback handler: LangChain / LangGraph runs as spans of the active rollout."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from agentlightning import semconv
from agentlightning.tracer import attribute_text, begin_span, propagate_traceparent
from agentlightning.tracer.runs import Run, enter_run, leave_run
from agentlightning.types import SpanKind
from agentlightning_langchain import _messages

__all__ = [
    "LightningCallbackHandler",
    "LANGGRAPH_NODE",
    "LANGGRAPH_STEP",
    "LANGCHAIN_RUN_TYPE",
    "RETRIEVER_QUERY",
    "RETRIEVER_DOCUMENT_COUNT",
    "RETRIEVER_DOCUMENT_IDS",
    "agent_name_of",
]

log = logging.getLogger("agentlightning.langchain")

#: What kind of LangChain run a span records: ``chain``, ``llm``, ``tool`` or ``retriever``.
LANGCHAIN_RUN_TYPE = "langchain.run.type"
#: On the span of a LangGraph node's run: the node's name and the graph step it ran in.
LANGGRAPH_NODE = "langgraph.node"
LANGGRAPH_STEP = "langgraph.step"
#: On a retriever's span: the query, and how many documents (and which ids, where they have ids) it returned.
RETRIEVER_QUERY = "langchain.retriever.query"
RETRIEVER_DOCUMENT_COUNT = "langchain.retriever.document_count"
RETRIEVER_DOCUMENT_IDS = "langchain.retriever.document_ids"

# LangGraph tags its own plumbing (channel writes, branch routing) with this; such runs get no span.
_HIDDEN = "langsmith:hidden"
# Where a run's agent name comes from, first match wins: create_agent(name=...) (langchain >= 1.2), then
# metadata={"agent_name": ...} on a runnable or a call, then the LangGraph node the call runs in.
_AGENT_KEYS = ("lc_agent_name", "agent_name", "langgraph_node")

# Every handler shares one table of the runs being recorded. A run reaches each handler attached to it (the one
# instrument() adds and one the user passes, say); the first claims it, so it is recorded once, and a run's
# parent is found whichever handler recorded it. Keyed by the run id's integer: hashing a UUID is a Python call.
_RUNS: dict[int, Run] = {}


def agent_name_of(metadata: Mapping[str, Any] | None) -> str | None:
    """The agent an LLM call belongs to, from its run's metadata: ``lc_agent_name`` (set by LangChain's
    ``create_agent(name=...)``), else ``agent_name`` (``metadata={"agent_name": ...}`` on a runnable or a call),
    else ``langgraph_node`` (the LangGraph node it runs in), else ``None``."""
    if metadata:
        for key in _AGENT_KEYS:
            name = metadata.get(key)
            if isinstance(name, str) and name:
                return name
    return None


def _run_name(serialized: Mapping[str, Any] | None, kwargs: Mapping[str, Any], default: str) -> str:
    name = kwargs.get("name")
    if isinstance(name, str) and name:
        return name
    if serialized:
        name = serialized.get("name")
        if isinstance(name, str) and name:
            return name
        ids = serialized.get("id")
        if isinstance(ids, list) and ids and isinstance(ids[-1], str):
            return ids[-1]
    return default


def _is_bubble_up(error: BaseException) -> bool:
    # LangGraph steers graphs with exceptions (interrupt(), Command(graph=PARENT) hand-offs): not failures.
    return any(cls.__name__ == "GraphBubbleUp" for cls in type(error).__mro__)


class LightningCallbackHandler(BaseCallbackHandler):
    """Records LangChain and LangGraph runs as spans of the active rollout.

    Attach it to one call (``config={"callbacks": [handler]}``), to a runnable (``runnable.with_config(callbacks=
    [handler])``), or to every run in the process with :func:`agentlightning_langchain.instrument`. Outside a
    rollout it records nothing. Graph, chain and node runs, chat model and LLM calls, tool calls and retriever
    calls become spans whose parents follow LangChain's run ids; rewards emitted inside a run become its children.

    A failure inside the handler is logged on the ``agentlightning.langchain`` logger and counted in
    :attr:`errors`; it never reaches the agent's run.
    """

    # Its failures are its own: LangChain must not re-raise them into the agent's run.
    raise_error: bool = False
    # Called directly on the agent's thread or task, also for async runs: without this, LangChain hands each
    # event of an async run to a thread pool (a thread hop per event, ~50 µs, and events out of order), and the
    # span made current at a run's start would be set in the pool's copy of the context, not the run's.
    run_inline: bool = True

    def __init__(self) -> None:
        super().__init__()
        #: How many callbacks failed inside the handler (each one is logged).
        self.errors = 0
        self._errors_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(errors={self.errors})"

    def _failed(self, callback: str) -> None:
        # Every callback catches its own failures (a try block costs nothing until it raises; a wrapper would cost
        # a call per event) and reports them here: LangChain must never see them.
        with self._errors_lock:
            self.errors += 1
        log.exception("LightningCallbackHandler.%s failed; the run goes on without this span", callback)

    # --- bookkeeping ----------------------------------------------------------------------------------------

    def _begin(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        name: str,
        attributes: dict[str, Any],
        kind: SpanKind = SpanKind.INTERNAL,
        current: bool = True,
    ) -> None:
        key = run_id.int
        if key in _RUNS:  # another handler on the same run records it
            return
        parent = _RUNS.get(parent_run_id.int) if parent_run_id is not None else None
        span = begin_span(name, parent=parent.span if parent is not None else None, attributes=attributes, kind=kind)
        if span is None:  # no rollout here: nothing to record into
            return
        run = Run(span)
        _RUNS[key] = run
        if current:
            enter_run(run)

    def _hide(self, run_id: UUID, parent_run_id: UUID | None) -> None:
        """A run without a span of its own: its children hang under its parent's span."""
        key = run_id.int
        if key in _RUNS:
            return
        parent = _RUNS.get(parent_run_id.int) if parent_run_id is not None else None
        if parent is not None:
            _RUNS[key] = Run(parent.span, own=False)

    def _end(self, run_id: UUID, attributes: dict[str, Any] | None = None, error: BaseException | None = None) -> None:
        run = _RUNS.pop(run_id.int, None)
        if run is None or not run.own:
            return
        leave_run(run)
        span = run.span
        if error is None:
            span.end(attributes)
        elif _is_bubble_up(error):
            span.end({**(attributes or {}), "langgraph.bubble_up": type(error).__qualname__})
        else:
            span.end(
                {**(attributes or {}), semconv.ERROR_TYPE: type(error).__qualname__},
                error=str(error) or type(error).__qualname__,
            )

    # --- chains, graphs and nodes ---------------------------------------------------------------------------

    def on_chain_start(
        self,
        serialized: dict[str, Any],
        inputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Open the span of a chain, graph or node run."""
        try:
            if tags and _HIDDEN in tags:
                self._hide(run_id, parent_run_id)
                return
            name = _run_name(serialized, kwargs, "chain")
            attributes: dict[str, Any] = {LANGCHAIN_RUN_TYPE: "chain"}
            if metadata:
                if metadata.get("lc_agent_name") == name:  # the graph create_agent(name=...) built
                    attributes[semconv.GEN_AI_OPERATION_NAME] = semconv.GEN_AI_OPERATION_INVOKE_AGENT
                    attributes[semconv.GEN_AI_AGENT_NAME] = name
                    name = f"{semconv.GEN_AI_OPERATION_INVOKE_AGENT} {name}"
                elif metadata.get("langgraph_node") == name:
                    attributes[LANGGRAPH_NODE] = name
                    step = metadata.get("langgraph_step")
                    if isinstance(step, int):
                        attributes[LANGGRAPH_STEP] = step
            self._begin(run_id, parent_run_id, name, attributes)
        except Exception:
            self._failed("on_chain_start")

    def on_chain_end(self, outputs: dict[str, Any], *, run_id: UUID, **kwargs: Any) -> None:
        """Close a chain's span."""
        try:
            self._end(run_id)
        except Exception:
            self._failed("on_chain_end")

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Close a chain's span as failed (LangGraph's interrupts and hand-offs are not failures)."""
        try:
            self._end(run_id, error=error)
        except Exception:
            self._failed("on_chain_error")

    # --- LLM calls ------------------------------------------------------------------------------------------

    def _begin_llm(
        self,
        operation: str,
        input_messages: list[dict[str, Any]],
        run_id: UUID,
        parent_run_id: UUID | None,
        metadata: dict[str, Any] | None,
        kwargs: dict[str, Any],
    ) -> None:
        propagate_traceparent()
        attributes = _messages.request_attributes(operation, kwargs.get("invocation_params"), metadata)
        attributes[LANGCHAIN_RUN_TYPE] = "llm"
        attributes[semconv.GEN_AI_INPUT_MESSAGES] = attribute_text(input_messages)
        agent = agent_name_of(metadata)
        if agent is not None:
            attributes[semconv.GEN_AI_AGENT_NAME] = agent
        model = attributes.get(semconv.GEN_AI_REQUEST_MODEL)
        # A batch (generate() with several inputs) starts all its calls before making any: none of them is the
        # one its requests come from, so none is made current and the gateway's spans join by response id.
        single = kwargs.get("batch_size", 1) == 1
        self._begin(
            run_id,
            parent_run_id,
            f"{operation} {model}" if model else operation,
            attributes,
            kind=SpanKind.CLIENT,
            current=single,
        )

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Open the span of a chat model call: messages, tools offered, model, parameters, agent name."""
        try:
            # LangChain starts one run per input: ``messages`` holds this run's conversation only.
            conversation = messages[0] if messages else []
            self._begin_llm(
                semconv.GEN_AI_OPERATION_CHAT,
                _messages.message_dicts(conversation),
                run_id,
                parent_run_id,
                metadata,
                kwargs,
            )
        except Exception:
            self._failed("on_chat_model_start")

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Open the span of a plain (text completion) LLM call."""
        try:
            prompt = prompts[0] if prompts else ""
            self._begin_llm(
                semconv.GEN_AI_OPERATION_TEXT_COMPLETION,
                [{"role": "user", "content": prompt}],
                run_id,
                parent_run_id,
                metadata,
                kwargs,
            )
        except Exception:
            self._failed("on_llm_start")

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        """Close an LLM call's span with the response: message and tool calls, usage, response id, model."""
        try:
            run = _RUNS.get(run_id.int)
            if run is None:
                return
            operation = run.span.attributes.get(semconv.GEN_AI_OPERATION_NAME, semconv.GEN_AI_OPERATION_CHAT)
            self._end(run_id, _messages.response_attributes(response, str(operation)))
        except Exception:
            self._failed("on_llm_end")

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Close an LLM call's span as failed."""
        try:
            self._end(run_id, error=error)
        except Exception:
            self._failed("on_llm_error")

    # --- tools ----------------------------------------------------------------------------------------------

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Open a tool call's span with its arguments."""
        try:
            name = _run_name(serialized, kwargs, "tool")
            attributes: dict[str, Any] = {
                LANGCHAIN_RUN_TYPE: "tool",
                semconv.GEN_AI_OPERATION_NAME: semconv.GEN_AI_OPERATION_EXECUTE_TOOL,
                semconv.GEN_AI_TOOL_NAME: name,
                semconv.GEN_AI_TOOL_CALL_ARGUMENTS: attribute_text(inputs) if inputs is not None else input_str,
            }
            self._begin(run_id, parent_run_id, f"{semconv.GEN_AI_OPERATION_EXECUTE_TOOL} {name}", attributes)
        except Exception:
            self._failed("on_tool_start")

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Close a tool call's span with its result (and the id of the tool call it answers)."""
        try:
            if run_id.int not in _RUNS:
                return
            result, call_id = _messages.tool_result(output)
            attributes = {semconv.GEN_AI_TOOL_CALL_RESULT: result}
            if call_id is not None:
                attributes[semconv.GEN_AI_TOOL_CALL_ID] = call_id
            self._end(run_id, attributes)
        except Exception:
            self._failed("on_tool_end")

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Close a tool call's span as failed."""
        try:
            self._end(run_id, error=error)
        except Exception:
            self._failed("on_tool_error")

    # --- retrievers -----------------------------------------------------------------------------------------

    def on_retriever_start(
        self,
        serialized: dict[str, Any],
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Open a retriever call's span with its query."""
        try:
            name = _run_name(serialized, kwargs, "retriever")
            attributes = {LANGCHAIN_RUN_TYPE: "retriever", RETRIEVER_QUERY: query}
            self._begin(run_id, parent_run_id, f"retrieve {name}", attributes)
        except Exception:
            self._failed("on_retriever_start")

    def on_retriever_end(self, documents: Sequence[Document], *, run_id: UUID, **kwargs: Any) -> None:
        """Close a retriever call's span with how many documents it found, and their ids."""
        try:
            attributes: dict[str, Any] = {RETRIEVER_DOCUMENT_COUNT: len(documents)}
            ids = [document.id for document in documents if isinstance(document.id, str)]
            if ids:
                attributes[RETRIEVER_DOCUMENT_IDS] = ids
            self._end(run_id, attributes)
        except Exception:
            self._failed("on_retriever_end")

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Close a retriever call's span as failed."""
        try:
            self._end(run_id, error=error)

        except Exception:
            self._failed("on_retriever_error")
