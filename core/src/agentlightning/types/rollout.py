"""Tasks, rollouts and attempts: the records of the rollout queue."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

__all__ = [
    "Task",
    "RolloutMode",
    "RolloutStatus",
    "AttemptStatus",
    "RolloutConfig",
    "Rollout",
    "Attempt",
    "AttemptedRollout",
    "RolloutRequest",
    "TERMINAL_ROLLOUT_STATUSES",
    "TERMINAL_ATTEMPT_STATUSES",
]

# Ids travel in URLs and database keys: keep them short and printable.
Identifier = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[\x21-\x7e]+$")]
# Seconds; bounded so every backend can store them and no NaN / inf slips in.
Seconds = Annotated[float, Field(gt=0, le=10**9, allow_inf_nan=False)]


class Task(BaseModel):
    """One input of a dataset: any JSON value, with an id."""

    id: Identifier
    input: JsonValue


class RolloutMode(str, Enum):
    """Which split a rollout belongs to."""

    TRAIN = "train"
    VAL = "val"
    TEST = "test"


class RolloutStatus(str, Enum):
    """Lifecycle of a rollout.

    ``queuing → preparing → running → succeeded | failed | cancelled``; a failed, timed-out or
    unresponsive attempt that its config allows to retry sends the rollout to ``requeuing``,
    where it waits in the queue for the next worker.
    """

    QUEUING = "queuing"
    PREPARING = "preparing"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REQUEUING = "requeuing"


class AttemptStatus(str, Enum):
    """Lifecycle of one attempt: ``preparing → running → succeeded | failed | timeout | unresponsive | cancelled``."""

    PREPARING = "preparing"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEOUT = "timeout"
    UNRESPONSIVE = "unresponsive"
    CANCELLED = "cancelled"


TERMINAL_ROLLOUT_STATUSES = frozenset({RolloutStatus.SUCCEEDED, RolloutStatus.FAILED, RolloutStatus.CANCELLED})
TERMINAL_ATTEMPT_STATUSES = frozenset(
    {
        AttemptStatus.SUCCEEDED,
        AttemptStatus.FAILED,
        AttemptStatus.TIMEOUT,
        AttemptStatus.UNRESPONSIVE,
        AttemptStatus.CANCELLED,
    }
)
_RETRYABLE = frozenset({AttemptStatus.FAILED, AttemptStatus.TIMEOUT, AttemptStatus.UNRESPONSIVE})


class RolloutConfig(BaseModel):
    """How long an attempt may take, and which failed attempts are retried.

    An attempt that runs longer than ``timeout_seconds`` ends as ``timeout``; one whose worker
    sends no heartbeat (or span) for ``unresponsive_seconds`` ends as ``unresponsive``. If the
    attempt's final status is in ``retry_on`` and fewer than ``max_attempts`` attempts were made,
    the rollout is requeued; otherwise it fails.

    ``unresponsive_seconds`` defaults to 300 so that no rollout can be stuck for good, even one whose
    worker died before it learned which attempt it had (say, the answer to its dequeue was lost).
    Workers send heartbeats far more often; pass ``None`` to wait forever.
    """

    model_config = ConfigDict(extra="forbid")

    timeout_seconds: Seconds | None = None
    unresponsive_seconds: Seconds | None = 300.0
    max_attempts: Annotated[int, Field(ge=1, le=1000)] = 1
    retry_on: list[AttemptStatus] = Field(
        default_factory=lambda: [AttemptStatus.FAILED, AttemptStatus.TIMEOUT, AttemptStatus.UNRESPONSIVE]
    )

    @field_validator("retry_on")
    @classmethod
    def _only_failures_retry(cls, value: list[AttemptStatus]) -> list[AttemptStatus]:
        wrong = [s.value for s in value if s not in _RETRYABLE]
        if wrong:
            raise ValueError(f"only failed, timeout and unresponsive attempts can be retried, not {wrong}")
        return value


class RolloutRequest(BaseModel):
    """What a caller gives to enqueue (or directly start) one rollout."""

    model_config = ConfigDict(extra="forbid")

    input: JsonValue
    mode: RolloutMode | None = None
    resources_id: Identifier | None = None
    config: RolloutConfig = Field(default_factory=RolloutConfig)
    metadata: dict[str, JsonValue] = Field(default_factory=dict)


class Rollout(BaseModel):
    """One run of the agent on one input, possibly over several attempts."""

    rollout_id: str
    input: JsonValue
    mode: RolloutMode | None = None
    resources_id: str | None = None
    status: RolloutStatus
    config: RolloutConfig
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    enqueue_time: float
    start_time: float | None = None
    end_time: float | None = None
    num_attempts: int = 0

    @property
    def is_finished(self) -> bool:
        """Whether the rollout reached a terminal status."""
        return self.status in TERMINAL_ROLLOUT_STATUSES


class Attempt(BaseModel):
    """One try of a rollout by one worker."""

    rollout_id: str
    attempt_id: str
    sequence_id: int = Field(description="1 for the first attempt of the rollout, 2 for the second, ...")
    status: AttemptStatus
    worker_id: str | None = None
    start_time: float
    end_time: float | None = None
    last_heartbeat_time: float | None = None
    metadata: dict[str, JsonValue] = Field(default_factory=dict)

    @property
    def is_finished(self) -> bool:
        """Whether the attempt reached a terminal status."""
        return self.status in TERMINAL_ATTEMPT_STATUSES


class AttemptedRollout(Rollout):
    """A rollout handed to a worker, together with the attempt the worker must report under."""

    attempt: Attempt
