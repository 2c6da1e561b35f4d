"""A prompt is prefilled once for every sequence that sends it, and never served from weights that changed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from agentlightning_engine import EngineError, TransformersEngine
from agentlightning_engine.prompt_cache import PrefilledPrompt, PromptCache
from conftest import chat

PROMPT = "Count from one to ten."


@pytest.fixture
def own_engine(tiny_model_dir: Path) -> Iterator[TransformersEngine]:
    with TransformersEngine(tiny_model_dir) as engine:
        yield engine


def logprobs(choice: Any) -> list[float]:
    return [entry.logprob for entry in choice.logprobs.content]


def close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-4


async def test_choices_of_one_prompt_share_its_prefill_and_answer_as_if_alone(own_engine: TransformersEngine) -> None:
    alone = await own_engine.chat_completion(chat(PROMPT, max_tokens=8, temperature=0, logprobs=True))
    reused_before = own_engine.statistics.prompts_reused
    together = await own_engine.chat_completion(chat(PROMPT, max_tokens=8, temperature=0, logprobs=True, n=4))
    # One request, four sequences: the prompt came from the earlier request, so none of the four ran it.
    assert own_engine.statistics.prompts_reused - reused_before == 4
    for choice in together.choices:
        assert choice.token_ids == alone.choices[0].token_ids
        assert close(logprobs(choice), logprobs(alone.choices[0]))


async def test_concurrent_requests_mixing_shared_and_distinct_prompts(own_engine: TransformersEngine) -> None:
    prompts = [PROMPT, "Name a colour.", PROMPT, "Say hello in French, please.", PROMPT]
    bodies = [chat(p, max_tokens=6, temperature=0, logprobs=True) for p in prompts]
    with TransformersEngine(own_engine.model, tokenizer=own_engine.tokenizer, prompt_cache_mb=0) as plain:
        expected = [await plain.chat_completion(b) for b in bodies]
        assert plain.statistics.prompts_reused == 0
    results = await asyncio.gather(*(own_engine.chat_completion(b) for b in bodies))
    assert own_engine.statistics.prompts_reused >= 2  # the second and third PROMPT at least
    for got, want in zip(results, expected, strict=True):
        assert got.choices[0].token_ids == want.choices[0].token_ids
        assert close(logprobs(got.choices[0]), logprobs(want.choices[0]))


async def test_distinct_prompts_prefilled_together_run_their_shared_beginning_once(
    own_engine: TransformersEngine,
) -> None:
    # The chat template gives every prompt the same system message: well over MIN_SHARED_PREFIX tokens.
    prompts = ["Name a colour.", "Say hello in French, please.", "Count from one to ten.", "Why?"]
    bodies = [chat(p, max_tokens=6, temperature=0, logprobs=True) for p in prompts]
    with TransformersEngine(own_engine.model, tokenizer=own_engine.tokenizer, prompt_cache_mb=0) as plain:
        expected = [await plain.chat_completion(b) for b in bodies]
        assert plain.statistics.prefix_tokens_shared == 0
    await own_engine.chat_completion(chat("Hi.", max_tokens=1))  # the first prefill learns the cache's layers
    results = await asyncio.gather(*(own_engine.chat_completion(b) for b in bodies))
    prompt_ids = [own_engine.render_prompt(own_engine._prepare(b).request) for b in bodies]
    shared = next(i for i in range(min(map(len, prompt_ids))) if len({p[i] for p in prompt_ids}) > 1)
    assert own_engine.statistics.prefix_tokens_shared == shared * (len(prompts) - 1)
    for got, want in zip(results, expected, strict=True):
        assert got.choices[0].token_ids == want.choices[0].token_ids
        assert close(logprobs(got.choices[0]), logprobs(want.choices[0]))
    # Each prompt was kept whole: asked again, it is reused as it is and answers the same.
    again = await own_engine.chat_completion(bodies[1])
    assert again.choices[0].token_ids == expected[1].choices[0].token_ids
    assert close(logprobs(again.choices[0]), logprobs(expected[1].choices[0]))


async def test_a_weight_change_is_never_served_from_a_prompt_prefilled_before(own_engine: TransformersEngine) -> None:
    body = chat(PROMPT, max_tokens=4, temperature=0, logprobs=True)
    before = await own_engine.chat_completion(body)
    with own_engine.paused(), torch.no_grad():
        own_engine.model.get_output_embeddings().weight.mul_(1.5)  # changes every logit, prompt's included
    after = await own_engine.chat_completion(body)
    # The first token's logprob comes straight from the prompt's prefill: a stale prefill would repeat it.
    assert abs(logprobs(after.choices[0])[0] - logprobs(before.choices[0])[0]) > 1e-3
    with TransformersEngine(own_engine.model, tokenizer=own_engine.tokenizer, prompt_cache_mb=0) as plain:
        fresh = await plain.chat_completion(body)
    assert close(logprobs(after.choices[0]), logprobs(fresh.choices[0]))


def test_a_negative_cache_size_is_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(EngineError, match="prompt_cache_mb"):
        TransformersEngine(tiny_model_dir, prompt_cache_mb=-1)


def prompt_of(tokens: int) -> PrefilledPrompt:
    return PrefilledPrompt(
        keys=(torch.zeros(1, 1, tokens, 4),), values=(torch.zeros(1, 1, tokens, 4),), logits=torch.zeros(8)
    )


def test_the_cache_keeps_the_most_recently_used_prompts_within_its_size() -> None:
    size = prompt_of(2).nbytes
    cache = PromptCache(max_bytes=2 * size)
    cache.put(((1,), None), prompt_of(2))
    cache.put(((2,), None), prompt_of(2))
    assert cache.get(((1,), None)) is not None  # now the most recently used
    cache.put(((3,), None), prompt_of(2))
    assert cache.get(((2,), None)) is None
    assert cache.get(((1,), None)) is not None and cache.get(((3,), None)) is not None
    assert cache.get(((1,), "adapter")) is None  # another adapter's prefill is another prompt
    assert cache.nbytes == 2 * size
    cache.put(((4,), None), prompt_of(100))  # larger than the whole cache: not kept, nothing evicted
    assert len(cache) == 2
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


async def test_a_weight_change_during_a_prefill_does_not_leave_that_prefill_in_the_cache(
    own_engine: TransformersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = chat(PROMPT, max_tokens=2, temperature=0, logprobs=True)
    generator = own_engine._generator
    run_prompts = generator._run_prompts
    trainer: list[threading.Thread] = []

    def change_weights() -> None:
        with own_engine.paused(), torch.no_grad():
            own_engine.model.get_output_embeddings().weight.mul_(1.5)

    def prefill_then_a_trainer_steps(sequences: Any) -> Any:
        rows = run_prompts(sequences)
        # A trainer wants to change the weights right after this forward pass, before the prompt is kept.
        thread = threading.Thread(target=change_weights)
        thread.start()
        thread.join(timeout=0.5)  # without the prefill holding the lock, the change happens here
        trainer.append(thread)
        return rows

    monkeypatch.setattr(generator, "_run_prompts", prefill_then_a_trainer_steps)
    await own_engine.chat_completion(body)
    monkeypatch.setattr(generator, "_run_prompts", run_prompts)
    trainer[0].join()
    after = await own_engine.chat_completion(body)
    with TransformersEngine(own_engine.model, tokenizer=own_engine.tokenizer, prompt_cache_mb=0) as plain:
        fresh = await plain.chat_completion(body)
    assert close(logprobs(after.choices[0]), logprobs(fresh.choices[0]))
