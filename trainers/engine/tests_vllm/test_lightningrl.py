"""LightningRL behind a real vLLM server: this process trains a copy of the served model, and the server reloads
it after every step, so the next rollouts (and any request) are answered by the trained weights."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from agentlightning_engine import VLLMEngine
from agentlightning_rl import LightningRL, LightningRLConfig, LoraSettings
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


@pytest.fixture
def unload_loras(engine: VLLMEngine) -> Iterator[None]:
    """Leave the server without the adapters a test loaded (it holds a few at most)."""
    yield
    for name in engine.loras:
        engine.unload_lora(name)


def _agent_chatter(answered_by: dict[str, set[str]]) -> Any:
    """A rollout with one call per agent named in ``answered_by`` (through ``llm.for_agent``), noting which model
    answered each."""
    clients: list[openai.AsyncOpenAI] = []

    @agl.rollout
    async def chatter(task: dict[str, Any], llm: agl.LLM) -> float:
        if not clients:
            clients.append(openai.AsyncOpenAI(api_key="unused", max_retries=0))
        text = ""
        for agent in answered_by:
            reply = (
                await clients[0]
                .with_options(base_url=llm.for_agent(agent).base_url)
                .chat.completions.create(
                    model=llm.model,
                    messages=[{"role": "user", "content": task["prompt"] + text}],
                    max_tokens=4,
                    temperature=1.0,
                )
            )
            answered_by[agent].add(reply.model)
            text += reply.choices[0].message.content or ""
        return sum(c in "aeiou" for c in text) / max(len(text), 1)

    return chatter


def _served_greedy(engine: VLLMEngine, model: str) -> tuple[list[int], list[int]]:
    response = httpx.post(f"{engine.url}/chat/completions", json=chat("Name a colour.", model=model), timeout=60)
    assert response.status_code == 200, response.text
    served = response.json()
    return served["prompt_token_ids"], served["choices"][0]["token_ids"]


@pytest.mark.usefixtures("unload_loras")
def test_a_lora_adapter_is_trained_and_reloaded_into_the_server_after_each_step(
    engine: VLLMEngine, tiny_models: TinyModels
) -> None:
    answered_by: dict[str, set[str]] = {"solver": set()}
    version = engine.weights_version
    config = LightningRLConfig(
        iterations=2,
        tasks_per_iteration=2,
        group_size=2,
        learning_rate=5e-2,
        skip_equal_groups=False,
        lora=LoraSettings(rank=4, alpha=16),
    )
    algorithm = LightningRL(engine, config, progress=False, policy=tiny_models.base)
    tasks = [{"prompt": f"Say something {i}"} for i in range(4)]
    result = agl.Trainer(algorithm=algorithm, store=agl.InMemoryStore(), max_concurrency=8).fit(
        _agent_chatter(answered_by), tasks
    )

    assert [r.sequences for r in result.history] == [4, 4]
    adapter = f"{MODEL_NAME}@agentlightning"
    assert algorithm.served_model == adapter and answered_by == {"solver": {adapter}}
    assert engine.weights_version == version  # the base weights stay as they are: only the adapter is reloaded
    # The adapter the server goes on serving outlives the run (vLLM reads its files when it needs them).
    assert result.adapters_folder is not None and engine.loras[adapter].startswith(str(result.adapters_folder))
    assert (result.adapters_folder / "agentlightning" / "adapter_config.json").is_file()
    # The server's adapter answers exactly as the trained copy does; its base model as the untrained one.
    prompt, trained = _served_greedy(engine, adapter)
    assert trained == greedy_reference(algorithm.backend.model, prompt, 8)[0]
    prompt, base = _served_greedy(engine, MODEL_NAME)
    untrained = AutoModelForCausalLM.from_pretrained(tiny_models.base, dtype="float32")
    assert base == greedy_reference(untrained, prompt, 8)[0]
    assert trained != base, "training did not change what the adapter says"


@pytest.mark.usefixtures("unload_loras")
def test_an_adapter_per_agent_behind_the_server_routes_each_trained_agent_to_its_own(
    engine: VLLMEngine, tiny_models: TinyModels
) -> None:
    answered_by: dict[str, set[str]] = {"writer": set(), "checker": set()}
    config = LightningRLConfig(
        iterations=2,
        tasks_per_iteration=2,
        group_size=2,
        learning_rate=5e-2,
        skip_equal_groups=False,
        agents=["writer"],
        lora=LoraSettings(rank=4, alpha=16, adapter_per_agent=True),
    )
    algorithm = LightningRL(engine, config, progress=False, policy=tiny_models.base)
    tasks = [{"prompt": f"Say something {i}"} for i in range(4)]
    result = agl.Trainer(algorithm=algorithm, store=agl.InMemoryStore(), max_concurrency=8).fit(
        _agent_chatter(answered_by), tasks
    )

    assert [r.sequences for r in result.history] == [4, 4]  # the writer's calls only
    writer = f"{MODEL_NAME}@writer"
    assert answered_by == {"writer": {writer}, "checker": {MODEL_NAME}}
    assert set(engine.loras) == {writer}
    prompt, trained = _served_greedy(engine, writer)
    assert trained == greedy_reference(algorithm.backend.model, prompt, 8)[0]
