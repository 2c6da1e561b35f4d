"""A runner working in the background on a store, for the runner tests, and what they read back from its spans."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import agentlightning as agl
from agentlightning import semconv

# Upper bound of every wait in the runner tests; generous so a loaded 2-core machine does not flake.
PATIENCE = 20.0


@asynccontextmanager
async def running(agent: agl.LitAgent, store: agl.LightningStore, **options: Any) -> AsyncIterator[agl.Runner]:
    """A runner working in the background; on exit it finishes its rollouts in flight, stops and closes."""
    runner = agl.Runner(agent, store, poll_interval=0.05, **options)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop=stop))
    try:
        yield runner
    finally:
        stop.set()
        done, _ = await asyncio.wait([task], timeout=PATIENCE)
        if not done:
            task.cancel()
        runner.close()
        if done:
            task.result()  # the runner itself must not have crashed


async def finished(store: agl.LightningStore, rollouts: list[agl.Rollout]) -> list[agl.Rollout]:
    """Wait until the rollouts finish; fails if any is still unfinished after PATIENCE."""
    done = await store.wait_for_rollouts([r.rollout_id for r in rollouts], timeout=PATIENCE)
    assert len(done) == len(rollouts), f"only {len(done)} of {len(rollouts)} rollouts finished"
    return done


def named(spans: list[agl.Span], name: str) -> list[agl.Span]:
    return [s for s in spans if s.name == name]


def the_exception(spans: list[agl.Span]) -> tuple[str, str]:
    """(type, message) of the attempt's one exception span."""
    (span,) = named(spans, semconv.SPAN_EXCEPTION)
    assert span.status.status_code == agl.StatusCode.ERROR
    return str(span.attributes[semconv.EXCEPTION_TYPE]), str(span.attributes[semconv.EXCEPTION_MESSAGE])
