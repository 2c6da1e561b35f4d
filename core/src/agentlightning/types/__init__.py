"""The data model: tasks, rollouts, attempts, resources, spans, and trajectories."""

from agentlightning.types.resources import LLM, AnyResource, GenericResource, PromptTemplate, Resource, Resources
from agentlightning.types.rollout import (
    TERMINAL_ATTEMPT_STATUSES,
    TERMINAL_ROLLOUT_STATUSES,
    Attempt,
    AttemptedRollout,
    AttemptStatus,
    Rollout,
    RolloutConfig,
    RolloutMode,
    RolloutRequest,
    RolloutStatus,
    Task,
)
from agentlightning.types.span import (
    Attributes,
    AttributeValue,
    Span,
    SpanEvent,
    SpanKind,
    SpanLink,
    SpanStatus,
    StatusCode,
)
from agentlightning.types.trajectory import Trajectory, Transition

__all__ = [
    "LLM",
    "AnyResource",
    "GenericResource",
    "PromptTemplate",
    "Resource",
    "Resources",
    "TERMINAL_ATTEMPT_STATUSES",
    "TERMINAL_ROLLOUT_STATUSES",
    "Attempt",
    "AttemptedRollout",
    "AttemptStatus",
    "Rollout",
    "RolloutConfig",
    "RolloutMode",
    "RolloutRequest",
    "RolloutStatus",
    "Task",
    "Attributes",
    "AttributeValue",
    "Span",
    "SpanEvent",
    "SpanKind",
    "SpanLink",
    "SpanStatus",
    "StatusCode",
    "Transition",
    "Trajectory",
]
