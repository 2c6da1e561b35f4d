"""Tracing overhead on the agent's thread: the cost of one emitter call inside a rollout, and a loss check.

    python benchmarks/tracing_overhead.py [--calls 20000] [--store sqlite|memory]

Prints microseconds per call for each emitter (median of 5 rounds; the writer thread runs meanwhile and
its cost is not on the agent's thread), the cost of an `agl.operation` span (a full OpenTelemetry span),
then runs a rollout of 1,000 emitted spans and prints how many reached the store.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import agentlightning as agl
from agentlightning.tracer import Tracer


def per_call(fn: Callable[[], None], calls: int) -> float:
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        rounds.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(rounds)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--store", choices=["sqlite", "memory"], default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store: agl.LightningStore = (
            agl.SqliteStore(Path(tmp) / "t.db") if args.store == "sqlite" else agl.InMemoryStore()
        )
        tracer = Tracer(store)
        rollout = await store.start_rollout(agl.RolloutRequest(input="bench"))
        async with tracer.trace(rollout.rollout_id, rollout.attempt.attempt_id):
            cases: dict[str, Callable[[], None]] = {
                "emit_reward(1.0)": lambda: agl.emit_reward(1.0),
                "emit_message(text)": lambda: agl.emit_message("tool returned 42"),
                "emit_annotation({k: v})": lambda: agl.emit_annotation({"difficulty": "hard"}),
                "emit_reward({a, b})": lambda: agl.emit_reward({"accuracy": 1.0, "length": -0.1}),
            }
            for label, fn in cases.items():
                print(f"{label:28s} {per_call(fn, args.calls):6.2f} µs per call")

            def op() -> None:
                with agl.operation(name="step"):
                    pass

            print(f"{'operation (OTel span)':28s} {per_call(op, args.calls // 4):6.2f} µs per call")
        await tracer.flush()
        emitted = 4 * 5 * args.calls + 5 * (args.calls // 4) + 1
        stats = await store.statistics()
        print(
            f"spans emitted {emitted}, in the store {stats.spans}, dropped {tracer.dropped(rollout.attempt.attempt_id)}"
        )

        one = await store.start_rollout(agl.RolloutRequest(input="1000 spans"))
        async with tracer.trace(one.rollout_id, one.attempt.attempt_id):
            for i in range(1000):
                agl.emit_annotation({"i": i})
        await tracer.flush()
        spans = await store.query_spans(one.rollout_id)
        print(
            f"rollout with 1,000 emitted spans: {len(spans) - 1} arrived (plus its root span), in order: "
            f"{[s.attributes.get('agentlightning.annotation.i') for s in spans[:-1]] == list(range(1000))}"
        )
        tracer.close()
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
