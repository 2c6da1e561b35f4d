"""Concurrent requests are batched together and each gets its own answer."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from agentlightning_engine import EngineServer, TransformersEngine
from conftest import chat

PROMPTS = [f"Question number {i}: what comes after {i}?" for i in range(8)]


def body(prompt: str) -> dict[str, Any]:
    return chat(prompt, max_tokens=16, temperature=0, logprobs=True)


async def test_eight_concurrent_requests_are_batched_and_each_answered_correctly(
    server: EngineServer, engine: TransformersEngine
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        alone = [(await client.post("/chat/completions", json=body(p))).json() for p in PROMPTS]
        before = engine.statistics.batches
        responses = await asyncio.gather(*(client.post("/chat/completions", json=body(p)) for p in PROMPTS))
    batches = engine.statistics.batches - before
    assert batches < len(PROMPTS), "concurrent requests should share batches"
    assert engine.statistics.largest_batch > 1
    for prompt, single, response in zip(PROMPTS, alone, responses, strict=True):
        assert response.status_code == 200
        together = response.json()
        assert engine.tokenizer.decode(together["prompt_token_ids"]).count(prompt) == 1
        assert together["prompt_token_ids"] == single["prompt_token_ids"]
        # Left padding does not change the answer: same tokens as when the request ran alone.
        assert together["choices"][0]["token_ids"] == single["choices"][0]["token_ids"]
        got = [e["logprob"] for e in together["choices"][0]["logprobs"]["content"]]
        want = [e["logprob"] for e in single["choices"][0]["logprobs"]["content"]]
        assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-3


async def test_requests_of_different_lengths_in_one_batch(engine: TransformersEngine) -> None:
    bodies = [chat("Hi", max_tokens=n, temperature=0) for n in (1, 3, 40, 7)] + [
        chat("Hi", max_tokens=5, temperature=1.0, seed=1, n=3)
    ]
    results = await asyncio.gather(*(engine.chat_completion(b) for b in bodies))
    assert [len(r.choices[0].token_ids) for r in results[:4]] == [1, 3, 40, 7]
    assert results[2].choices[0].token_ids[:7] == results[3].choices[0].token_ids
    assert [len(c.token_ids) for c in results[4].choices] == [5, 5, 5]


async def test_a_cancelled_request_does_not_stop_the_others(engine: TransformersEngine) -> None:
    long = asyncio.ensure_future(engine.chat_completion(chat("Hi", max_tokens=300, temperature=0)))
    short = asyncio.ensure_future(engine.chat_completion(chat("Hi", max_tokens=10, temperature=0)))
    await asyncio.sleep(0.05)
    long.cancel()
    result = await short
    assert len(result.choices[0].token_ids) == 10
    # The engine still answers afterwards.
    assert len((await engine.chat_completion(chat("Hi", max_tokens=2, temperature=0))).choices[0].token_ids) == 2


async def test_requests_join_a_batch_that_is_already_generating(engine: TransformersEngine) -> None:
    long_body = chat("Tell me a very long story.", max_tokens=600, temperature=0)
    long_alone = await engine.chat_completion(long_body)
    alone = [await engine.chat_completion(body(p)) for p in PROMPTS[:4]]
    joined_before = engine.statistics.joined

    chunks = await engine.stream_chat_completion(long_body)
    long_ids: list[int] = []
    async for chunk in chunks:  # wait until the long request is generating, then send the others
        long_ids += chunk.choices[0].token_ids if chunk.choices else []
        if long_ids:
            break
    together = await asyncio.gather(*(engine.chat_completion(body(p)) for p in PROMPTS[:4]))
    async for chunk in chunks:
        long_ids += chunk.choices[0].token_ids if chunk.choices else []

    assert engine.statistics.joined - joined_before == 4
    assert long_ids == long_alone.choices[0].token_ids  # the running request is not disturbed
    for single, joined in zip(alone, together, strict=True):
        assert joined.choices[0].token_ids == single.choices[0].token_ids
        assert joined.choices[0].logprobs is not None and single.choices[0].logprobs is not None
        got = [e.logprob for e in joined.choices[0].logprobs.content]
        want = [e.logprob for e in single.choices[0].logprobs.content]
        assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-3
