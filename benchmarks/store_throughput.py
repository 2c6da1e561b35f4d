"""Store throughput: K workers loop dequeue -> N spans of ~1 KB -> finish attempt, while an enqueuer keeps the queue full.

Prints rollouts/s and spans/s for each backend asked for. Examples:

    python benchmarks/store_throughput.py --backend sqlite              # in-process SQLite
    python benchmarks/store_throughput.py --backend http                # agl store serve (SQLite) over HTTP
    python benchmarks/store_throughput.py --backend http --span-batch 1 # one HTTP request per span
    python benchmarks/store_throughput.py --backend http --url http://127.0.0.1:4747   # a server you started

Each span looks like an LLM call: a 500-character prompt, a 500-character completion and ~20 attributes.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import agentlightning as agl
from agentlightning import semconv

PROMPT = ("What is the capital of the country whose flag has a red maple leaf? " * 8)[:500]
COMPLETION = ("The capital of Canada is Ottawa, located in the province of Ontario. " * 8)[:500]
_ids = random.Random(0)


def _hex(nbytes: int) -> str:
    return f"{_ids.getrandbits(nbytes * 8):0{nbytes * 2}x}"


def llm_span(rollout_id: str, attempt_id: str, trace_id: str, index: int) -> agl.Span:
    """An LLM-call span of about 1 KB."""
    now = time.time()
    return agl.Span(
        rollout_id=rollout_id,
        attempt_id=attempt_id,
        trace_id=trace_id,
        span_id=_hex(8),
        name="chat smollm2",
        kind=agl.SpanKind.CLIENT,
        start_time=now,
        end_time=now + 0.05,
        attributes={
            semconv.GEN_AI_OPERATION_NAME: "chat",
            semconv.GEN_AI_PROVIDER_NAME: "openai",
            semconv.GEN_AI_REQUEST_MODEL: "SmolLM2-135M-Instruct",
            semconv.GEN_AI_RESPONSE_MODEL: "SmolLM2-135M-Instruct",
            semconv.GEN_AI_REQUEST_TEMPERATURE: 0.7,
            semconv.GEN_AI_REQUEST_TOP_P: 0.95,
            semconv.GEN_AI_REQUEST_MAX_TOKENS: 256,
            semconv.GEN_AI_RESPONSE_ID: f"chatcmpl-{_hex(8)}",
            semconv.GEN_AI_RESPONSE_FINISH_REASONS: ["stop"],
            semconv.GEN_AI_USAGE_INPUT_TOKENS: 120,
            semconv.GEN_AI_USAGE_OUTPUT_TOKENS: 110,
            semconv.GEN_AI_AGENT_NAME: "solver",
            semconv.GEN_AI_INPUT_MESSAGES: PROMPT,
            semconv.GEN_AI_OUTPUT_MESSAGES: COMPLETION,
            "server.address": "127.0.0.1",
            "server.port": 8000,
            "http.response.status_code": 200,
            "agentlightning.step": index,
            "agentlightning.latency_ms": 50.0,
            "agentlightning.cached": False,
        },
    )


async def run_workers(
    store: agl.LightningStore, workers: int, spans: int, span_batch: int, seconds: float, enqueue: bool
) -> tuple[int, int, float]:
    """Run the workload for ``seconds`` after a short warm-up; returns (rollouts, spans, elapsed)."""
    stop = False
    measuring = False
    done_rollouts = done_spans = 0
    in_queue = 0

    async def enqueuer() -> None:
        nonlocal in_queue
        while not stop:
            if in_queue < workers * 4:
                await store.enqueue_many_rollouts([agl.RolloutRequest(input={"question": "q"}) for _ in range(64)])
                in_queue += 64
            else:
                await asyncio.sleep(0.002)

    async def worker(name: str) -> None:
        nonlocal done_rollouts, done_spans, in_queue
        while not stop:
            rollout = await store.dequeue_rollout(worker_id=name)
            if rollout is None:
                await asyncio.sleep(0.002)
                continue
            in_queue -= 1
            aid = rollout.attempt.attempt_id
            trace_id = _hex(16)
            batch = [llm_span(rollout.rollout_id, aid, trace_id, i) for i in range(spans)]
            for start in range(0, spans, span_batch):
                await store.add_many_spans(batch[start : start + span_batch])
            await store.update_attempt(rollout.rollout_id, aid, status=agl.AttemptStatus.SUCCEEDED)
            if measuring:
                done_rollouts += 1
                done_spans += spans

    tasks = [asyncio.create_task(worker(f"w{i}")) for i in range(workers)]
    if enqueue:
        tasks.append(asyncio.create_task(enqueuer()))
    await asyncio.sleep(min(2.0, seconds / 4))
    measuring = True
    start = time.perf_counter()
    await asyncio.sleep(seconds)
    measuring = False
    elapsed = time.perf_counter() - start
    stop = True
    await asyncio.gather(*tasks, return_exceptions=True)
    return done_rollouts, done_spans, elapsed


def _client_process(
    url: str, workers: int, spans: int, span_batch: int, seconds: float, enqueue: bool, out: mp.Queue
) -> None:  # type: ignore[type-arg]
    async def main() -> tuple[int, int, float]:
        store = agl.StoreClient(url)
        try:
            return await run_workers(store, workers, spans, span_batch, seconds, enqueue)
        finally:
            await store.close()

    out.put(asyncio.run(main()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_http(args: argparse.Namespace, tmp: Path) -> tuple[int, int, float]:
    server = None
    url = args.url
    if url is None:
        port = _free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agentlightning.cli",
                "store",
                "serve",
                "--store",
                f"sqlite:///{tmp / 'bench.db'}",
                "--port",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
    try:
        procs = args.client_processes
        out: mp.Queue = mp.get_context("spawn").Queue()  # type: ignore[type-arg]
        ctx = mp.get_context("spawn")
        children = [
            ctx.Process(
                target=_client_process,
                args=(url, args.workers // procs, args.spans, args.span_batch, args.seconds, i == 0, out),
            )
            for i in range(procs)
        ]
        for child in children:
            child.start()
        results = [out.get() for _ in children]
        for child in children:
            child.join()
        return sum(r[0] for r in results), sum(r[1] for r in results), max(r[2] for r in results)
    finally:
        if server is not None:
            server.terminate()
            server.wait()


async def bench_local(args: argparse.Namespace, tmp: Path) -> tuple[int, int, float]:
    store: agl.LightningStore = agl.InMemoryStore() if args.backend == "memory" else agl.SqliteStore(tmp / "bench.db")
    try:
        return await run_workers(store, args.workers, args.spans, args.span_batch, args.seconds, True)
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["memory", "sqlite", "http"], action="append")
    parser.add_argument("--workers", "-k", type=int, default=32)
    parser.add_argument("--spans", "-n", type=int, default=20)
    parser.add_argument(
        "--span-batch", type=int, default=20, help="spans per add_many_spans call (1: one call per span)"
    )
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument(
        "--client-processes", type=int, default=1, help="HTTP: split the workers over this many processes"
    )
    parser.add_argument("--url", help="HTTP: benchmark this running server instead of starting one")
    args = parser.parse_args()
    backends = args.backend or ["memory", "sqlite", "http"]
    print(
        f"workload: K={args.workers} workers, N={args.spans} spans of ~1 KB per rollout, {args.span_batch} spans per call, {args.seconds:g} s, {os.cpu_count()} CPUs"
    )
    for backend in backends:
        args.backend = backend
        with tempfile.TemporaryDirectory() as tmp:
            if backend == "http":
                rollouts, spans, elapsed = bench_http(args, Path(tmp))
            else:
                rollouts, spans, elapsed = asyncio.run(bench_local(args, Path(tmp)))
        print(f"{backend:7s} {rollouts / elapsed:9.1f} rollouts/s {spans / elapsed:10.1f} spans/s")


if __name__ == "__main__":
    main()
