"""Gateway overhead: latency added per call and requests/s, against a fast local upstream, span recording on.

    python benchmarks/gateway_overhead.py [--calls 2000] [--concurrency 16]

Starts, each in its own process: a minimal OpenAI-compatible upstream answering a fixed chat completion
(with vLLM's token ids and logprobs) and `agl gateway` in front of it, recording into a SQLite store.
Then, from this process: sequential calls straight to the upstream and through the gateway (p50 / p99
latency, and the difference), and requests/s through the gateway with N concurrent clients. Every
gateway call is attributed to one rollout, so every call is recorded as a span.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import aiohttp

import agentlightning as agl

UPSTREAM = textwrap.dedent(
    """
    import json, sys, uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route
    ids = list(range(100, 140))
    body = json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench",
        "choices": [{"index": 0, "finish_reason": "stop", "token_ids": ids,
                     "message": {"role": "assistant", "content": "The answer is forty-two, as everyone knows."},
                     "logprobs": {"content": [{"token": "x", "logprob": -0.1, "bytes": [120], "top_logprobs": []} for _ in ids]}}],
        "usage": {"prompt_tokens": 60, "completion_tokens": 40, "total_tokens": 100},
        "prompt_token_ids": list(range(60)),
    }).encode()
    async def chat(request):
        await request.body()
        return Response(body, media_type="application/json")
    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", loop="uvloop", http="httptools")
    """
)
REQUEST = {
    "model": "bench",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the answer to life, the universe and everything?"},
    ],
    "temperature": 0.7,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


async def sequential(session: aiohttp.ClientSession, url: str, calls: int) -> list[float]:
    latencies = []
    for _ in range(calls):
        start = time.perf_counter()
        async with session.post(url, json=REQUEST) as response:
            await response.read()
            assert response.status == 200, response.status
        latencies.append((time.perf_counter() - start) * 1000)
    return latencies


async def concurrent(session: aiohttp.ClientSession, url: str, clients: int, seconds: float) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            async with session.post(url, json=REQUEST) as response:
                await response.read()
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return done / (time.perf_counter() - start)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


async def measure(upstream: str, gateway: str, args: argparse.Namespace) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await sequential(session, upstream, 200)  # warm up both
        await sequential(session, gateway, 200)
        direct = await sequential(session, upstream, args.calls)
        through = await sequential(session, gateway, args.calls)
        rps_direct = await concurrent(session, upstream, args.concurrency, args.seconds)
        rps = await concurrent(session, gateway, args.concurrency, args.seconds)
    print(
        f"upstream direct : p50 {pct(direct, 50):6.2f} ms  p99 {pct(direct, 99):6.2f} ms  ({args.calls} sequential calls)"
    )
    print(f"through gateway : p50 {pct(through, 50):6.2f} ms  p99 {pct(through, 99):6.2f} ms")
    print(
        f"added by gateway: p50 {pct(through, 50) - pct(direct, 50):6.2f} ms  p99 {pct(through, 99) - pct(direct, 99):6.2f} ms"
    )
    print(f"{args.concurrency} concurrent clients: {rps:7.1f} requests/s through the gateway ({rps_direct:.1f} direct)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "gateway.db"
        up_port, gw_port = free_port(), free_port()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        procs = [subprocess.Popen([sys.executable, "-c", UPSTREAM, str(up_port)], env=env)]
        try:
            wait_port(up_port)

            async def prepare() -> agl.AttemptedRollout:
                store = agl.SqliteStore(db)
                try:
                    return await store.start_rollout(agl.RolloutRequest(input="bench"))
                finally:
                    await store.close()

            rollout = asyncio.run(prepare())
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "agentlightning.cli",
                        "gateway",
                        "--upstream",
                        f"http://127.0.0.1:{up_port}/v1",
                        "--store",
                        f"sqlite:///{db}",
                        "--port",
                        str(gw_port),
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                )
            )
            wait_port(gw_port)
            gateway = f"http://127.0.0.1:{gw_port}/rollouts/{rollout.rollout_id}/attempts/{rollout.attempt.attempt_id}/v1/chat/completions"
            asyncio.run(measure(f"http://127.0.0.1:{up_port}/v1/chat/completions", gateway, args))
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait()

        async def count() -> int:
            store = agl.SqliteStore(db, read_only=True)
            try:
                return (await store.statistics()).spans
            finally:
                await store.close()

        print(f"spans recorded: {asyncio.run(count())}")


if __name__ == "__main__":
    main()
