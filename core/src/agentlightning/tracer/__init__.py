"""Tracing: the tracer that writes spans to the store, and the emitters agents call."""

from agentlightning.tracer._context import active_rollout
from agentlightning.tracer._encoding import attribute_text
from agentlightning.tracer.emit import (
    NoActiveRollout,
    Thread,
    emit_annotation,
    emit_exception,
    emit_message,
    emit_object,
    emit_reward,
    operation,
    reward_computation,
    set_emitters_outside_rollout,
)
from agentlightning.tracer.propagation import current_agent, propagate_traceparent
from agentlightning.tracer.spans import OpenSpan, begin_span
from agentlightning.tracer.tracer import Tracer, otel_tracer

__all__ = [
    "NoActiveRollout",
    "OpenSpan",
    "begin_span",
    "Thread",
    "Tracer",
    "active_rollout",
    "attribute_text",
    "current_agent",
    "emit_annotation",
    "emit_exception",
    "emit_message",
    "emit_object",
    "emit_reward",
    "operation",
    "otel_tracer",
    "propagate_traceparent",
    "reward_computation",
    "set_emitters_outside_rollout",
]
