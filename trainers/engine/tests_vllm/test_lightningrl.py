"""LightningRL behind a real vLLM server: this process trains a copy of the served model, and the server reloads
it after every step, so the next rollouts (and any request) are answered by the trained weights."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from agentlightning_engine import VLLMEngine
from agentlightning_rl import LightningRL, LightningRLConfig
from conftest import MODEL_NAME, TinyModels, chat, greedy_reference
from transformers import AutoModelForCausalLM

import agentlightning as agl


@pytest.mark.usefixtures("restore_base_weights")
def test_each_step_is_reloaded_into_the_server(engine: VLLMEngine, tiny_models: TinyModels) -> None:
    clients: list[openai.AsyncOpenAI] = []

    @agl.rollout
    async def chatter(task: dict[str, Any], llm: agl.LLM) -> float:
        if not clients:
            clients.append(openai.AsyncOpenAI(api_key="unused", max_retries=0))
        reply = (
            await clients[0]
            .with_options(base_url=llm.base_url)
            .chat.completions.create(
                model=llm.model, messages=[{"role": "user", "content": task["prompt"]}], max_tokens=4, temperature=1.0
            )
        )
        text = reply.choices[0].message.content or ""
        return sum(c in "aeiou" for c in text) / max(len(text), 1)

    version = engine.weights_version
    config = LightningRLConfig(
        iterations=2, tasks_per_iteration=2, group_size=2, learning_rate=1e-2, skip_equal_groups=False
    )
    algorithm = LightningRL(engine, config, sampling={"temperature": 1.0}, progress=False, policy=tiny_models.base)
    tasks = [{"prompt": f"Say something {i}"} for i in range(4)]
    result = agl.Trainer(algorithm=algorithm, store=agl.InMemoryStore(), max_concurrency=8).fit(chatter, tasks)

    assert [r.sequences for r in result.history] == [4, 4]  # every call came back with vLLM's token ids
    assert engine.weights_version == version + 2  # one reload per step
    # The server now answers exactly as the trained copy does.
    response = httpx.post(f"{engine.url}/chat/completions", json=chat("Name a colour.", model=MODEL_NAME), timeout=60)
    assert response.status_code == 200, response.text
    served = response.json()
    expected, _ = greedy_reference(algorithm.backend.model, served["prompt_token_ids"], 8)
    assert served["choices"][0]["token_ids"] == expected
    untrained = AutoModelForCausalLM.from_pretrained(tiny_models.base, dtype="float32")
    base, _ = greedy_reference(untrained, served["prompt_token_ids"], 8)
    assert expected != base, "training did not change what the model says"
