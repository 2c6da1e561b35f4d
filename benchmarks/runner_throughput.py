"""Runner throughput: one runner (in this process) over a SQLite store, with an agent that only waits.

The agent sleeps ``--agent-seconds`` (default 0.5 s, standing in for an LLM call), emits one reward and returns
1.0. An enqueuer keeps at least ``--queued`` rollouts waiting, so the runner is never short of work. Prints the
peak and mean number of rollouts in flight (agents running at once) and rollouts/s over the measurement window;
with enough headroom the runner keeps ``--concurrency`` rollouts in flight, and rollouts/s approaches
concurrency / agent-seconds. Examples:

    python benchmarks/runner_throughput.py                      # 500 at once
    python benchmarks/runner_throughput.py --concurrency 1000 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import agentlightning as agl


class InFlight:
    """Counts the agents running right now, and the most ever at once."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.started = 0

    def enter(self) -> None:
        self.now += 1
        self.started += 1
        self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        self.now -= 1


async def bench(args: argparse.Namespace, folder: Path) -> None:
    in_flight = InFlight()

    @agl.rollout
    async def agent(task: int) -> float:
        in_flight.enter()
        try:
            await asyncio.sleep(args.agent_seconds)
            agl.emit_reward(0.5)
        finally:
            in_flight.leave()
        return 1.0

    store = agl.SqliteStore(folder / "bench.db")
    runner = agl.Runner(agent, store, max_concurrency=args.concurrency)
    stop = asyncio.Event()
    enqueued = 0

    async def enqueuer() -> None:
        nonlocal enqueued
        while not stop.is_set():
            # Rollouts enqueued but not yet taken by the runner (an agent starts right after its dequeue).
            if enqueued - in_flight.started < args.queued + 500:
                await store.enqueue_many_rollouts([agl.RolloutRequest(input=i) for i in range(500)])
                enqueued += 500
            else:
                await asyncio.sleep(0.01)

    await store.enqueue_many_rollouts([agl.RolloutRequest(input=i) for i in range(args.queued)])  # a full queue
    enqueued = args.queued
    feeding = asyncio.create_task(enqueuer())
    running = asyncio.create_task(runner.run(stop=stop))
    try:
        await asyncio.sleep(args.warmup)
        in_flight.peak = in_flight.now
        completed_before = runner.completed
        samples: list[int] = []
        loop = asyncio.get_running_loop()
        start = loop.time()
        while (elapsed := loop.time() - start) < args.seconds:
            samples.append(in_flight.now)
            await asyncio.sleep(0.05)
        completed = runner.completed - completed_before
        peak = in_flight.peak
        queue_length = (await store.statistics()).queue_length
    finally:
        stop.set()
        await asyncio.gather(running, return_exceptions=True)
        feeding.cancel()
        await asyncio.gather(feeding, return_exceptions=True)
        runner.close()
        statistics = await store.statistics()
        await store.close()
    print(
        f"runner  max_concurrency={args.concurrency}: in flight peak {peak}, mean {sum(samples) / len(samples):.1f}; "
        f"{completed / elapsed:.1f} rollouts/s (ideal {args.concurrency / args.agent_seconds:.0f}); "
        f"queue at the end of the window {queue_length}"
    )
    failed = statistics.rollouts[agl.RolloutStatus.FAILED]
    print(f"store   {statistics.spans} spans, {statistics.spans_dropped} dropped, {failed} rollouts failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=500, help="the runner's max_concurrency")
    parser.add_argument("--agent-seconds", type=float, default=0.5, help="how long each agent sleeps")
    parser.add_argument("--queued", type=int, default=1000, help="keep at least this many rollouts queued")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window")
    args = parser.parse_args()
    print(
        f"workload: one runner, async agent sleeping {args.agent_seconds:g} s, >= {args.queued} rollouts queued, "
        f"{args.warmup:g} s warm-up, {args.seconds:g} s window, {os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        asyncio.run(bench(args, Path(tmp)))
        print(f"total   {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
