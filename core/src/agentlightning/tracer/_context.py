"""Which rollout the code running now belongs to. Lives in contextvars, so it follows asyncio tasks."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentlightning.tracer.tracer import Tracer


@dataclass(frozen=True)
class ActiveRollout:
    """The attempt that spans recorded now are attributed to, and the tracer that writes them."""

    rollout_id: str
    attempt_id: str
    tracer: Tracer


ACTIVE: contextvars.ContextVar[ActiveRollout | None] = contextvars.ContextVar(
    "agentlightning_active_rollout", default=None
)


def active_rollout() -> ActiveRollout | None:
    """The attempt being traced in this context, if any."""
    return ACTIVE.get()
