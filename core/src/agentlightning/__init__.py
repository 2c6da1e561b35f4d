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
    from agentlightning.server import StoreServer
    from agentlightning.store.client import StoreClient

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
    # modules
    "semconv",
]

_LAZY = {
    "StoreClient": "agentlightning.store.client",
    "StoreServer": "agentlightning.server.serve",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "semconv":
        import importlib

        return importlib.import_module("agentlightning.semconv")
    raise AttributeError(f"module 'agentlightning' has no attribute {name!r}")
