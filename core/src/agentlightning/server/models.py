"""Request bodies of the store server's REST API (responses are the public types themselves)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, WithJsonSchema

from agentlightning.types import (
    AnyResource,
    AttemptStatus,
    RolloutConfig,
    RolloutMode,
    RolloutRequest,
    RolloutStatus,
    Span,
)
from agentlightning.types.rollout import Identifier

_WorkerId = Annotated[str, Field(min_length=1, max_length=256)]
_Id = Annotated[str, Field(min_length=1, max_length=256)]
MAX_BATCH = 100_000


def _fits_in_a_path(value: str) -> str:
    # The id is a path segment of GET /resources/{resources_id}: a '/' splits it, clients resolve '.' and '..'
    # away, and 'latest' names the newest version there, so a version so named could never be fetched.
    if "/" in value or value in (".", ".."):
        raise ValueError("a resources id must not contain '/' nor be '.' or '..' (it is used in URLs)")
    if value == "latest":
        raise ValueError("'latest' is not a usable resources id: GET /resources/latest gives the newest version")
    return value


_ResourcesId = Annotated[
    Identifier,
    AfterValidator(_fits_in_a_path),
    # The same rule for schema readers (the validator above words the error better than a pattern would).
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": 256,
            "pattern": r"^[\x21-\x2e\x30-\x7e]+$",
            "not": {"enum": [".", "..", "latest"]},
        }
    ),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnqueueManyRequest(_Body):
    rollouts: Annotated[list[RolloutRequest], Field(max_length=MAX_BATCH)]


class StartRolloutRequest(_Body):
    rollout: RolloutRequest
    worker_id: _WorkerId | None = None


class DequeueRequest(_Body):
    worker_id: _WorkerId | None = None


class DequeueManyRequest(_Body):
    worker_id: _WorkerId | None = None
    limit: Annotated[int, Field(ge=1, le=MAX_BATCH)] = Field(description="Rollouts to take at most.")
    wait: Annotated[float, Field(ge=0, le=300, allow_inf_nan=False)] = Field(
        default=0.0, description="Seconds to wait for a rollout while the queue is empty (at most 300 s)."
    )


class StartAttemptRequest(_Body):
    worker_id: _WorkerId | None = None


class QueryRolloutsRequest(_Body):
    status: list[RolloutStatus] | None = None
    rollout_ids: Annotated[list[_Id], Field(max_length=MAX_BATCH)] | None = None
    mode: RolloutMode | None = None
    limit: Annotated[int, Field(ge=0, le=2**31)] | None = None
    offset: Annotated[int, Field(ge=0, le=2**31)] = 0
    newest_first: bool = False


class WaitRequest(_Body):
    rollout_ids: Annotated[list[_Id], Field(max_length=MAX_BATCH)]
    timeout: Annotated[float, Field(ge=0, le=300, allow_inf_nan=False)] = Field(
        default=30.0, description="Seconds to wait at most (the server caps a single wait at 300 s)."
    )


class UpdateRolloutRequest(_Body):
    status: RolloutStatus | None = None
    mode: RolloutMode | None = None
    resources_id: Identifier | None = None  # as in RolloutRequest
    config: RolloutConfig | None = None
    metadata: dict[str, JsonValue] | None = None


class UpdateAttemptRequest(_Body):
    status: AttemptStatus | None = None
    worker_id: _WorkerId | None = None
    metadata: dict[str, JsonValue] | None = None


class AddSpansRequest(_Body):
    spans: Annotated[list[Span], Field(max_length=MAX_BATCH)]


class AddSpansResponse(BaseModel):
    sequence_ids: list[int] = Field(description="The sequence id each span got, in the order sent.")


class AddResourcesRequest(_Body):
    resources: dict[str, AnyResource]
    resources_id: _ResourcesId | None = None


class ErrorDetail(BaseModel):
    type: str = Field(description="Name of the error class, e.g. RolloutNotFound.")
    message: str
    details: list[dict[str, JsonValue]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: str = "ok"
