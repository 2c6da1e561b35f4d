"""The rollout / attempt state machine, shared by every backend."""

from __future__ import annotations

from agentlightning.errors import InvalidStatusTransition
from agentlightning.types import (
    TERMINAL_ATTEMPT_STATUSES,
    TERMINAL_ROLLOUT_STATUSES,
    AttemptStatus,
    RolloutConfig,
    RolloutStatus,
)

ACTIVE_ATTEMPT_STATUSES = frozenset({AttemptStatus.PREPARING, AttemptStatus.RUNNING})
QUEUED_ROLLOUT_STATUSES = frozenset({RolloutStatus.QUEUING, RolloutStatus.REQUEUING})


def rollout_status_after_attempt(config: RolloutConfig, ended: AttemptStatus, attempts_made: int) -> RolloutStatus:
    """Where the rollout goes when its latest attempt ends with status ``ended``."""
    if ended == AttemptStatus.SUCCEEDED:
        return RolloutStatus.SUCCEEDED
    if ended == AttemptStatus.CANCELLED:
        return RolloutStatus.CANCELLED
    if ended in config.retry_on and attempts_made < config.max_attempts:
        return RolloutStatus.REQUEUING
    return RolloutStatus.FAILED


def check_attempt_transition(attempt_id: str, current: AttemptStatus, target: AttemptStatus) -> bool:
    """Whether changing ``current`` to ``target`` changes anything; raises if it is not allowed."""
    if current == target:
        return False
    if current in TERMINAL_ATTEMPT_STATUSES:
        raise InvalidStatusTransition(
            f"Attempt {attempt_id!r} already ended as {current.value!r}; it cannot become {target.value!r}."
        )
    if target == AttemptStatus.PREPARING:
        raise InvalidStatusTransition(f"Attempt {attempt_id!r} is {current.value!r}; it cannot go back to 'preparing'.")
    return True


def check_rollout_transition(rollout_id: str, current: RolloutStatus, target: RolloutStatus) -> bool:
    """Whether a user's change of ``current`` to ``target`` changes anything; raises if it is not allowed."""
    if current == target:
        return False
    if target == RolloutStatus.QUEUING:
        if current in TERMINAL_ROLLOUT_STATUSES or current in QUEUED_ROLLOUT_STATUSES:
            return True
        raise InvalidStatusTransition(
            f"Rollout {rollout_id!r} is {current.value!r}; only a finished rollout can be queued again."
        )
    if target in TERMINAL_ROLLOUT_STATUSES:
        if current in TERMINAL_ROLLOUT_STATUSES:
            raise InvalidStatusTransition(
                f"Rollout {rollout_id!r} already ended as {current.value!r}; set it to 'queuing' to run it again."
            )
        return True
    raise InvalidStatusTransition(
        f"Rollout status {target.value!r} is reached through its attempts, not set directly; "
        "use 'queuing', 'cancelled', 'succeeded' or 'failed'."
    )


def attempt_deadline(timeout_at: float | None, unresponsive_seconds: float | None, last_alive: float) -> float | None:
    """When an active attempt times out or becomes unresponsive, whichever comes first; ``None`` if never."""
    deadlines = [
        d
        for d in (timeout_at, None if unresponsive_seconds is None else last_alive + unresponsive_seconds)
        if d is not None
    ]
    return min(deadlines) if deadlines else None


def expired_status(now: float, timeout_at: float | None) -> AttemptStatus:
    """Which ending an attempt past its deadline gets: ``timeout`` if it ran too long, else ``unresponsive``."""
    if timeout_at is not None and now >= timeout_at:
        return AttemptStatus.TIMEOUT
    return AttemptStatus.UNRESPONSIVE
