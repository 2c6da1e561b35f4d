"""The store interface every backend implements."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

from pydantic import BaseModel, Field, JsonValue, ValidationError

from agentlightning.errors import StoreError
from agentlightning.types import (
    AnyResource,
    Attempt,
    AttemptedRollout,
    AttemptStatus,
    Resources,
    Rollout,
    RolloutConfig,
    RolloutMode,
    RolloutRequest,
    RolloutStatus,
    Span,
)

__all__ = ["EncodedSpan", "LightningStore", "StoreStatistics", "check_dequeue_arguments"]


def check_dequeue_arguments(limit: int, wait: float) -> None:
    """Refuse a ``dequeue_many_rollouts`` call that cannot mean anything."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"dequeue_many_rollouts takes at least one rollout (limit={limit!r}).")
    if not wait >= 0 or wait == float("inf"):
        raise ValueError(f"dequeue_many_rollouts waits a finite number of seconds, 0 or more (wait={wait!r}).")


class EncodedSpan(NamedTuple):
    """A span already in the store's JSON form (:class:`~agentlightning.Span` serialised without its
    ``sequence_id``), with the fields a store files it by.

    The tracer writes what it records this way: it checks each record's fields itself and puts the JSON together
    around one call of orjson's JSON writer, which costs a fraction of making and serialising a pydantic ``Span``
    per record. Whoever makes one vouches that ``json`` is a valid span with these ids. (A named tuple: the tracer
    makes one per span, and a tuple is the cheapest object to make.)
    """

    rollout_id: str
    attempt_id: str
    span_id: str
    json: str

    @classmethod
    def of(cls, span: Span) -> EncodedSpan:
        """``span`` serialised (its ``sequence_id`` left out: the store numbers it)."""
        return cls(span.rollout_id, span.attempt_id, span.span_id, span.model_dump_json(exclude=_NOT_ENCODED))


_NOT_ENCODED = {"sequence_id"}


class StoreStatistics(BaseModel):
    """Counts of what a store holds."""

    rollouts: dict[RolloutStatus, int] = Field(description="Number of rollouts in each status.")
    attempts: dict[AttemptStatus, int] = Field(description="Number of attempts in each status.")
    spans: int
    resources_versions: int
    queue_length: int = Field(description="Rollouts waiting to be dequeued (queuing or requeuing).")
    spans_dropped: int = Field(
        default=0, description="Spans that tracers could not write, as runners reported them on their attempts."
    )


class LightningStore(ABC):
    """Where rollouts are queued, attempts tracked, spans recorded and resources published.

    All methods are coroutines. A store is safe to use from several event loops and threads
    at once. Rollouts move ``queuing → preparing → running → succeeded | failed | cancelled``;
    the store itself ends attempts that outlive their ``RolloutConfig`` timeouts and requeues
    or fails their rollouts, so a rollout whose worker died is never stuck.
    """

    # --- queue -------------------------------------------------------------------------------
    async def enqueue_rollout(
        self,
        input: JsonValue,
        *,
        mode: RolloutMode | None = None,
        resources_id: str | None = None,
        config: RolloutConfig | None = None,
        metadata: dict[str, JsonValue] | None = None,
    ) -> Rollout:
        """Add one rollout to the back of the queue."""
        request = RolloutRequest(
            input=input,
            mode=mode,
            resources_id=resources_id,
            config=config or RolloutConfig(),
            metadata=metadata or {},
        )
        (rollout,) = await self.enqueue_many_rollouts([request])
        return rollout

    @abstractmethod
    async def enqueue_many_rollouts(self, requests: Sequence[RolloutRequest]) -> list[Rollout]:
        """Add several rollouts to the queue at once (all or none), in the given order."""

    @abstractmethod
    async def dequeue_rollout(self, worker_id: str | None = None) -> AttemptedRollout | None:
        """Take the oldest waiting rollout and open a new attempt on it; ``None`` when the queue is empty.

        Requeued rollouts go to the front of the queue, so a retried rollout does not hold up its group.
        """

    async def dequeue_many_rollouts(
        self, limit: int, worker_id: str | None = None, *, wait: float = 0.0
    ) -> list[AttemptedRollout]:
        """Take up to ``limit`` waiting rollouts at once, oldest first (requeued ones first), opening an attempt on
        each, as :meth:`dequeue_rollout` does one by one. When the queue is empty, wait up to ``wait`` seconds for
        a rollout to be queued; an empty list when none was.

        One call starts a runner's free slots together (one round trip to a remote store), and a runner waiting on
        an empty queue starts as soon as work arrives instead of at its next poll. This default takes the rollouts
        one by one and looks again every 50 ms while it waits; the SQLite store takes them in one transaction and
        is woken by the enqueue itself.
        """
        check_dequeue_arguments(limit, wait)
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            got: list[AttemptedRollout] = []
            while len(got) < limit and (rollout := await self.dequeue_rollout(worker_id)) is not None:
                got.append(rollout)
            remaining = deadline - asyncio.get_running_loop().time()
            if got or remaining <= 0:
                return got
            await asyncio.sleep(min(0.05, remaining))

    @abstractmethod
    async def start_rollout(self, request: RolloutRequest, worker_id: str | None = None) -> AttemptedRollout:
        """Create a rollout and its first attempt at once, bypassing the queue (for direct runs)."""

    @abstractmethod
    async def start_attempt(self, rollout_id: str, worker_id: str | None = None) -> AttemptedRollout:
        """Open a new attempt on an existing rollout whose previous attempt has ended (a manual retry)."""

    # --- attempts ----------------------------------------------------------------------------
    @abstractmethod
    async def update_attempt(
        self,
        rollout_id: str,
        attempt_id: str,
        *,
        status: AttemptStatus | None = None,
        worker_id: str | None = None,
        metadata: dict[str, JsonValue] | None = None,
    ) -> Attempt:
        """Change an attempt. Ending the rollout's latest attempt ends, requeues or fails the rollout per its config."""

    @abstractmethod
    async def heartbeat(self, rollout_id: str, attempt_id: str) -> Attempt:
        """Tell the store the attempt's worker is alive. Returns the attempt, so the worker sees if it was ended."""

    @abstractmethod
    async def query_attempts(self, rollout_id: str) -> list[Attempt]:
        """All attempts of a rollout, first to last."""

    # --- rollouts ----------------------------------------------------------------------------
    @abstractmethod
    async def get_rollout_by_id(self, rollout_id: str) -> Rollout:
        """The rollout with this id; raises ``RolloutNotFound``."""

    @abstractmethod
    async def query_rollouts(
        self,
        *,
        status: Sequence[RolloutStatus] | None = None,
        rollout_ids: Sequence[str] | None = None,
        mode: RolloutMode | None = None,
        limit: int | None = None,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[Rollout]:
        """Rollouts matching every given filter, in enqueue order (or newest first)."""

    @abstractmethod
    async def update_rollout(
        self,
        rollout_id: str,
        *,
        status: RolloutStatus | None = None,
        mode: RolloutMode | None = None,
        resources_id: str | None = None,
        config: RolloutConfig | None = None,
        metadata: dict[str, JsonValue] | None = None,
    ) -> Rollout:
        """Change a rollout.

        ``status`` may be set to ``cancelled``, ``succeeded`` or ``failed`` while the rollout is
        unfinished (its running attempt ends the same way), or to ``queuing`` to run a finished
        rollout again. Other statuses are reached only through attempts.
        """

    @abstractmethod
    async def wait_for_rollouts(self, rollout_ids: Sequence[str], timeout: float | None = None) -> list[Rollout]:
        """Wait until every given rollout has finished, or ``timeout`` seconds pass.

        Returns the finished ones, in the order of ``rollout_ids``. Woken by the status changes
        themselves, not by polling.
        """

    # --- spans -------------------------------------------------------------------------------
    async def add_span(self, span: Span) -> Span:
        """Record one span; see :meth:`add_many_spans`."""
        (stored,) = await self.add_many_spans([span])
        return stored

    @abstractmethod
    async def add_many_spans(self, spans: Sequence[Span]) -> list[Span]:
        """Record spans (all or none), numbering those without a ``sequence_id`` in order.

        Returns the same span objects with their ``sequence_id`` set.

        A span whose ``span_id`` the attempt already has is not stored twice, so a writer may
        safely resend a batch. Spans count as heartbeats and move a preparing attempt to running.
        """

    async def add_encoded_spans(self, spans: Sequence[EncodedSpan]) -> list[int]:
        """Record spans already in JSON form, all or none, like :meth:`add_many_spans`; returns their sequence ids.

        The tracer writes through this method. This default parses each span and calls :meth:`add_many_spans`;
        the SQLite stores and the store client file the JSON as it is. A store that overrides
        :meth:`add_many_spans` to see or refuse spans should override this too.
        """
        try:
            parsed = [Span.model_validate_json(span.json) for span in spans]
        except ValidationError as exc:
            raise StoreError(f"An encoded span is not a valid span: {exc}") from exc
        return [span.sequence_id or 0 for span in await self.add_many_spans(parsed)]

    async def submit_spans(self, spans: Sequence[Span]) -> asyncio.Future[list[Span]]:
        """Start recording spans, and return as soon as the write is ordered before every later operation
        on this store; the returned future then gives what :meth:`add_many_spans` gives, or its error.

        The SQLite stores (one write queue each) return at once, so the gateway can answer an agent before
        the commit and still guarantee that whatever the agent does next (finishing its attempt, reading
        its spans) through the same store sees the spans. This default waits for the write itself.
        """
        future: asyncio.Future[list[Span]] = asyncio.get_running_loop().create_future()
        try:
            future.set_result(await self.add_many_spans(spans))
        except Exception as exc:
            future.set_exception(exc)
        return future

    @abstractmethod
    async def query_spans(self, rollout_id: str, attempt_id: str | Literal["latest"] | None = None) -> list[Span]:
        """Spans of a rollout (all attempts, or one, or the latest), ordered by attempt then sequence id."""

    # --- resources ---------------------------------------------------------------------------
    @abstractmethod
    async def add_resources(self, resources: Mapping[str, AnyResource], resources_id: str | None = None) -> Resources:
        """Publish a new version of the resources; it becomes the latest."""

    @abstractmethod
    async def get_resources_by_id(self, resources_id: str) -> Resources:
        """One published version; raises ``ResourcesNotFound``."""

    @abstractmethod
    async def get_latest_resources(self) -> Resources | None:
        """The newest published version, or ``None`` if nothing was published yet."""

    # --- misc --------------------------------------------------------------------------------
    @abstractmethod
    async def statistics(self) -> StoreStatistics:
        """Counts of rollouts, attempts, spans and resources."""

    async def close(self) -> None:  # noqa: B027 (a no-op for backends that hold nothing)
        """Release the store's connections and threads. The store cannot be used afterwards."""

    async def __aenter__(self) -> LightningStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
