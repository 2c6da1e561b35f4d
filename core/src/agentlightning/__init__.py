"""Agent Lightning: train the LLMs inside existing agents from their own runs.

``import agentlightning as agl`` gives the data model (rollouts, attempts, spans, resources),
the stores and the store server. Heavy parts (the HTTP client and server) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentlightning.errors import (
    AgentLightningError,
    AttemptNotFound,
    InvalidStatusTransition,
    MissingTokenIds,
    PromptTemplateError,
    ResourcesNotFound,
    RolloutNotFound,
    StoreConflict,
    StoreError,
    StoreRequestError,
    StoreUnavailable,
    Unauthorized,
)
from agentlightning.store import InMemoryStore, LightningStore, SqliteStore, StoreStatistics, open_store
from agentlightning.types import (
    LLM,
    AnyResource,
    Attempt,
    AttemptedRollout,
    AttemptStatus,
    Attributes,
    AttributeValue,
    GenericResource,
    PromptTemplate,
    Resource,
    Resources,
    Rollout,
    RolloutConfig,
    RolloutMode,
    RolloutRequest,
    RolloutStatus,
    Span,
    SpanEvent,
    SpanKind,
    SpanLink,
    SpanStatus,
    StatusCode,
    Task,
)

if TYPE_CHECKING:
    from agentlightning import semconv
    from agentlightning.adapter import ChatExample, TraceToMessages, TraceToTrajectory
    from agentlightning.agent import FunctionAgent, LitAgent, rollout
    from agentlightning.algorithm import Algorithm, AlgorithmContext, Baseline, BaselineResult
    from agentlightning.gateway import Gateway
    from agentlightning.integrations import (
        Integration,
        IntegrationError,
        installed_integrations,
        instrument,
        uninstrument,
    )
    from agentlightning.runner import AgentReturnedGarbage, AgentTimedOut, Runner
    from agentlightning.server import StoreServer
    from agentlightning.store.client import StoreClient
    from agentlightning.tracer import (
        NoActiveRollout,
        Thread,
        Tracer,
        emit_annotation,
        emit_exception,
        emit_message,
        emit_object,
        emit_reward,
        operation,
        reward_computation,
        set_emitters_outside_rollout,
    )
    from agentlightning.trainer import Trainer
    from agentlightning.types import Trajectory, Transition

__version__ = "0.1.0"

__all__ = [
    # data model
    "Task",
    "Rollout",
    "Attempt",
    "AttemptedRollout",
    "RolloutStatus",
    "AttemptStatus",
    "RolloutMode",
    "RolloutConfig",
    "RolloutRequest",
    "Resource",
    "Resources",
    "AnyResource",
    "LLM",
    "PromptTemplate",
    "GenericResource",
    "Span",
    "SpanEvent",
    "SpanLink",
    "SpanKind",
    "SpanStatus",
    "StatusCode",
    "Attributes",
    "AttributeValue",
    "Transition",
    "Trajectory",
    # agents, runners, trainers
    "rollout",
    "LitAgent",
    "FunctionAgent",
    "Runner",
    "AgentReturnedGarbage",
    "AgentTimedOut",
    "Trainer",
    "Algorithm",
    "AlgorithmContext",
    "Baseline",
    "BaselineResult",
    # tracing
    "Tracer",
    "Thread",
    "emit_reward",
    "emit_message",
    "emit_object",
    "emit_exception",
    "emit_annotation",
    "operation",
    "reward_computation",
    "set_emitters_outside_rollout",
    "NoActiveRollout",
    # LLM gateway
    "Gateway",
    # integrations (agent frameworks)
    "instrument",
    "uninstrument",
    "installed_integrations",
    "Integration",
    "IntegrationError",
    # adapters
    "TraceToTrajectory",
    "TraceToMessages",
    "ChatExample",
    # stores
    "LightningStore",
    "InMemoryStore",
    "SqliteStore",
    "StoreClient",
    "StoreServer",
    "StoreStatistics",
    "open_store",
    # errors
    "AgentLightningError",
    "StoreError",
    "StoreConflict",
    "StoreRequestError",
    "StoreUnavailable",
    "RolloutNotFound",
    "AttemptNotFound",
    "ResourcesNotFound",
    "InvalidStatusTransition",
    "Unauthorized",
    "PromptTemplateError",
    "MissingTokenIds",
    # modules
    "semconv",
]

# Loaded on first use, so `import agentlightning` stays fast (the tracer pulls in OpenTelemetry).
_LAZY = {
    "StoreClient": "agentlightning.store.client",
    "Gateway": "agentlightning.gateway",
    "instrument": "agentlightning.integrations",
    "uninstrument": "agentlightning.integrations",
    "installed_integrations": "agentlightning.integrations",
    "Integration": "agentlightning.integrations",
    "IntegrationError": "agentlightning.integrations",
    "StoreServer": "agentlightning.server.serve",
    "rollout": "agentlightning.agent",
    "LitAgent": "agentlightning.agent",
    "FunctionAgent": "agentlightning.agent",
    "Runner": "agentlightning.runner",
    "AgentReturnedGarbage": "agentlightning.runner",
    "AgentTimedOut": "agentlightning.runner",
    "Trainer": "agentlightning.trainer",
    "Algorithm": "agentlightning.algorithm",
    "AlgorithmContext": "agentlightning.algorithm",
    "Baseline": "agentlightning.algorithm",
    "BaselineResult": "agentlightning.algorithm",
    "Tracer": "agentlightning.tracer",
    "Thread": "agentlightning.tracer",
    "emit_reward": "agentlightning.tracer",
    "emit_message": "agentlightning.tracer",
    "emit_object": "agentlightning.tracer",
    "emit_exception": "agentlightning.tracer",
    "emit_annotation": "agentlightning.tracer",
    "operation": "agentlightning.tracer",
    "reward_computation": "agentlightning.tracer",
    "set_emitters_outside_rollout": "agentlightning.tracer",
    "NoActiveRollout": "agentlightning.tracer",
    "TraceToTrajectory": "agentlightning.adapter",
    "TraceToMessages": "agentlightning.adapter",
    "ChatExample": "agentlightning.adapter",
    "Transition": "agentlightning.types",
    "Trajectory": "agentlightning.types",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "semconv":
        import importlib

        return importlib.import_module("agentlightning.semconv")
    raise AttributeError(f"module 'agentlightning' has no attribute {name!r}")
