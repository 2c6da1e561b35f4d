"""SFT's loop through the whole stack: runners, gateway, engine (a tiny random model), store, adapters,
selection, fine-tuning; its files (metrics, exported examples), multi-agent selection, and the report."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from agentlightning_engine import TransformersEngine
from agentlightning_sft import IGNORE_INDEX, SFT, Candidate, LoraSettings, NothingToTrain, SFTConfig, collate
from agentlightning_sft import training as sft_training
from openai import AsyncOpenAI, OpenAI

import agentlightning as agl

PROMPTS = [{"prompt": f"Say something {i}"} for i in range(16)]


async def _ask(llm: agl.LLM, messages: list[dict[str, Any]], max_tokens: int) -> str:
    async with AsyncOpenAI(base_url=llm.base_url, api_key="unused") as client:
        reply = await client.chat.completions.create(
            model=llm.model,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=max_tokens,
            temperature=float(llm.sampling_parameters.get("temperature", 1.0)),  # type: ignore[arg-type]
        )
    return reply.choices[0].message.content or ""


def _with_greedy_first_word(engine: TransformersEngine, task: dict[str, Any]) -> dict[str, Any]:
    """The task with the untrained model's greedy first word for it: a word it samples now and then."""
    with engine.serve(port=0) as server:
        client = OpenAI(base_url=server.url, api_key="unused")
        reply = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": task["prompt"]}], max_tokens=1, temperature=0
        )
    return {**task, "target": reply.choices[0].message.content}


def _fit(engine: TransformersEngine, config: SFTConfig, agent: Any, train: Any, val: Any = None, **kwargs: Any) -> Any:
    kwargs.setdefault("sampling", {"temperature": 1.0})
    algorithm = SFT(engine, config, progress=False, **kwargs)
    trainer = agl.Trainer(algorithm=algorithm, store=agl.InMemoryStore(), max_concurrency=32)
    return trainer.fit(agent, train, val)


@agl.rollout
async def _say_target(task: dict[str, Any], llm: agl.LLM) -> float:
    text = await _ask(llm, [{"role": "user", "content": task["prompt"]}], max_tokens=4)
    return 1.0 if text.startswith(task["target"]) else 0.0


@pytest.mark.parametrize("lora", [None, LoraSettings(rank=8, alpha=16)], ids=["full", "lora"])
def test_one_iteration_raises_the_reward(engine: TransformersEngine, lora: LoraSettings | None) -> None:
    tasks = [_with_greedy_first_word(engine, PROMPTS[0])]
    config = SFTConfig(
        iterations=1,
        tasks_per_iteration=4,
        rollouts_per_task=8,
        min_reward=1.0,
        best_of_n=None,
        epochs=3,
        batch_size=8,
        learning_rate=1e-2 if lora else 3e-3,
        lora=lora,
        seed=0,
    )
    # Sampled cooler than the model's own nearly flat distribution: the greedy word comes up now and then.
    result = _fit(engine, config, _say_target, tasks, val=tasks * 32, sampling={"temperature": 0.5})

    before, after = result.initial_validation, result.final_validation
    assert (before.iteration, after.iteration, after.rollouts) == (0, 1, 32)
    (record,) = result.history
    assert record.rollouts == 32 and record.selected_rollouts > 0
    assert record.selected_rollouts == round(record.success_rate * 32)  # every success, and only those
    assert record.examples == record.selected_rollouts and record.steps == 3 * -(-record.examples // 8)
    assert after.success_rate >= before.success_rate + 0.25, result.report()
    assert "->" in result.report()


@agl.rollout
async def _writer_and_critic(task: dict[str, Any], llm: agl.LLM) -> float:
    """Two agents: the writer answers, a tool result comes back, the writer answers again; the critic judges."""
    writer, critic = llm.for_agent("writer"), llm.for_agent("critic")
    messages: list[dict[str, Any]] = [{"role": "user", "content": task["prompt"]}]
    draft = await _ask(writer, messages, max_tokens=3)
    messages += [{"role": "assistant", "content": draft}, {"role": "user", "content": "Tool says: 42. Again."}]
    final = await _ask(writer, messages, max_tokens=3)
    await _ask(critic, [{"role": "user", "content": f"Judge: {final}"}], max_tokens=2)
    return float(len(final) % 2)


def test_selected_agents_calls_are_exported_and_masked_to_their_own_tokens(
    engine: TransformersEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained: list[Any] = []
    fine_tune = sft_training.fine_tune

    def spy(model: Any, optimizer: Any, examples: Any, config: Any, **kwargs: Any) -> Any:
        trained.extend(examples)
        return fine_tune(model, optimizer, examples, config, **kwargs)

    monkeypatch.setattr("agentlightning_sft.algorithm.fine_tune", spy)
    config = SFTConfig(
        iterations=2, tasks_per_iteration=2, rollouts_per_task=2, agents=["writer"], min_reward=None, best_of_n=1
    )
    result = _fit(
        engine,
        config,
        _writer_and_critic,
        PROMPTS[:4],
        val=PROMPTS[:2],
        metrics_dir=tmp_path / "metrics",
        export_dir=tmp_path / "data",
    )

    # Best of two per task, two tasks, two iterations; two writer calls per rollout, the critic's left out.
    assert [r.selected_rollouts for r in result.history] == [2, 2]
    assert [r.examples for r in result.history] == [4, 4]
    assert len(result.examples) == 8 and {e.agent_name for e in result.examples} == {"writer"}
    for k in (1, 2):
        lines = (tmp_path / "data" / f"iteration-{k}.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        assert len(records) == 4
        assert all(r["messages"][-1]["role"] == "assistant" for r in records)
        assert not any("Judge" in json.dumps(r) for r in records)
    # The writer's second call: its prompt holds its first reply and the tool's words; only its reply is trained.
    tokenizer = engine.tokenizer
    exported = result.examples[: len(trained)]
    batch = collate(trained)
    for row, (example, chat) in enumerate(zip(trained, exported, strict=True)):
        labels = batch.labels[row]
        assert labels[labels != IGNORE_INDEX].tolist() == example.completion_token_ids
        generated = tokenizer.decode(example.completion_token_ids, skip_special_tokens=True)
        assert generated.strip() == (chat.messages[-1]["content"] or "").strip()
        assert not (labels[: len(example.prompt_token_ids)] != IGNORE_INDEX).any()
    assert any("Tool says" in tokenizer.decode(e.prompt_token_ids) for e in trained)

    with (tmp_path / "metrics" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [1, 2]
    assert int(rows[0]["examples"]) == 4 and float(rows[0]["loss"]) > 0
    with (tmp_path / "metrics" / "validation.csv").open() as f:
        assert [int(r["iteration"]) for r in csv.DictReader(f)] == [0, 2]
    assert result.to_hf_dataset().num_rows == 8


def test_a_run_whose_agent_never_calls_the_llm_stops_with_the_reason(engine: TransformersEngine) -> None:
    @agl.rollout
    async def silent(task: dict[str, Any], llm: agl.LLM) -> float:
        return 1.0

    with pytest.raises(NothingToTrain, match="no LLM call"):
        _fit(engine, SFTConfig(iterations=1, tasks_per_iteration=1, rollouts_per_task=1), silent, PROMPTS[:1])


def test_a_selection_function_sees_every_rollout_and_may_select_none(engine: TransformersEngine) -> None:
    seen: list[Any] = []

    def none_of_them(candidates: Sequence[Candidate]) -> list[Candidate]:
        seen.extend(candidates)
        return []

    weights = next(engine.model.parameters()).detach().clone()
    config = SFTConfig(iterations=1, tasks_per_iteration=2, rollouts_per_task=2, select=none_of_them)
    result = _fit(engine, config, _chatter, PROMPTS[:2])

    assert len(seen) == 4 and {c.task_id for c in seen} == {"train-0", "train-1"}
    (record,) = result.history
    assert (record.selected_rollouts, record.examples, record.steps, record.loss) == (0, 0, 0, None)
    assert torch.equal(next(engine.model.parameters()), weights)  # nothing to fine-tune on: nothing changed
    assert result.examples == [] and result.validations == []


@agl.rollout
async def _chatter(task: dict[str, Any], llm: agl.LLM) -> float:
    return float(len(await _ask(llm, [{"role": "user", "content": task["prompt"]}], max_tokens=2)))
