"""A dynamic batcher: requests that arrive while the model is busy, or within a few milliseconds of each
other, are generated together as one batch, in one worker thread.

This is batching per batch, not continuous batching: a request that arrives while a batch is generating
waits for that batch to end (rows leave it as they finish, so the wait is the longest answer in it).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from agentlightning_engine.generation import Sequence

__all__ = ["DynamicBatcher", "BatchStatistics"]

log = logging.getLogger("agentlightning_engine")

_STOP = object()


@dataclass
class BatchStatistics:
    """What the batcher did so far: batches started, sequences (choices) generated, the most rows at once."""

    batches: int = 0
    sequences: int = 0
    largest_batch: int = 0
    #: Sequences that joined a batch that was already generating.
    joined: int = 0
    #: Sequences that started from a prompt prefilled for another sequence (filled in by the engine).
    prompts_reused: int = 0
    #: Prompt tokens not run because the distinct prompts prefilled with them began with the same ones (filled in
    #: by the engine).
    prefix_tokens_shared: int = 0


class DynamicBatcher:
    """Collects the sequences of requests into batches of at most ``max_batch_size`` rows and runs each with
    ``run_batch(batch, take)`` in a worker thread; ``take(rows)``, given how many rows the running batch has now,
    hands over requests queued since that fit next to them. All sequences of one request (its ``n`` choices) go in
    the same batch.

    A batch starts once no new request came for ``batch_wait_s`` after the last one, or ``max_batch_wait_s`` after
    the first, or when it is full."""

    def __init__(
        self,
        run_batch: Callable[[list[Sequence], Callable[[int], list[Sequence]]], None],
        *,
        max_batch_size: int = 32,
        batch_wait_s: float = 0.02,
        max_batch_wait_s: float = 0.1,
        name: str = "agentlightning-engine-batcher",
    ) -> None:
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self.max_batch_wait_s = max(max_batch_wait_s, batch_wait_s)
        self._queue: queue.Queue[list[Sequence] | object] = queue.Queue()
        self._carry: list[Sequence] | object | None = None
        self.statistics = BatchStatistics()
        self._current: list[Sequence] = []  # every sequence of the running batch, joined ones included
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, sequences: list[Sequence]) -> None:
        """Queue the sequences of one request."""
        self._queue.put(sequences)

    def close(self) -> None:
        """Finish the batch in progress, fail what is still queued, and stop the worker."""
        self._queue.put(_STOP)
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        while True:
            first = self._carry if self._carry is not None else self._queue.get()
            self._carry = None
            if first is _STOP:
                self._fail_queued()
                return
            assert isinstance(first, list)
            batch = list(first)
            # A burst of requests (the rollouts of an RL step, started one after another) arrives spread over tens
            # of milliseconds: keep collecting while they keep coming, up to a limit, so they share one prefill
            # instead of most of them joining a batch that started with the first few.
            start = time.monotonic()
            while len(batch) < self.max_batch_size:
                now = time.monotonic()
                wait = min(self.batch_wait_s, start + self.max_batch_wait_s - now)
                try:
                    item = self._queue.get(timeout=max(0.0, wait))
                except queue.Empty:
                    break
                if not isinstance(item, list) or len(batch) + len(item) > self.max_batch_size:
                    self._carry = item  # the next batch starts with it (or the worker stops)
                    break
                batch.extend(item)
            self._run(batch)

    def _take(self, rows: int) -> list[Sequence]:
        """Whole requests queued since the batch started, as many as fit next to ``rows`` rows; does not wait."""
        free_rows = self.max_batch_size - rows
        taken: list[Sequence] = []
        while True:
            item = self._carry if self._carry is not None else self._next_nowait()
            self._carry = None
            if item is None:
                break
            if not isinstance(item, list) or len(taken) + len(item) > free_rows:
                self._carry = item
                break
            taken.extend(item)
        self._current += taken
        self.statistics.sequences += len(taken)
        self.statistics.joined += len(taken)
        self.statistics.largest_batch = max(self.statistics.largest_batch, rows + len(taken))
        return taken

    def _next_nowait(self) -> list[Sequence] | object | None:
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None

    def _run(self, batch: list[Sequence]) -> None:
        self.statistics.batches += 1
        self.statistics.sequences += len(batch)
        self.statistics.largest_batch = max(self.statistics.largest_batch, len(batch))
        self._current = list(batch)
        try:
            self._run_batch(batch, self._take)
        except Exception as exc:  # a failed batch fails its requests, not the engine
            log.exception("Generating a batch of %d sequences failed", len(self._current))
            for sequence in self._current:
                if not sequence.finished:
                    sequence.fail(exc)

    def _fail_queued(self) -> None:
        from agentlightning_engine.errors import EngineError

        error = EngineError("The engine was closed before this request was generated.")
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, list):
                for sequence in item:
                    sequence.fail(error)
