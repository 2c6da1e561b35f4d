"""LightningRL's loop through the whole stack: runner, gateway, engine (a tiny random model), store, adapter,
optimizer; its files (metrics, plot, checkpoint) and resuming; and the errors that stop a run that cannot learn."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import agentlightning_rl as agl_rl
import pytest
import torch
from agentlightning_engine import TransformersEngine
from agentlightning_engine.testing import save_tiny_model
from agentlightning_rl import LightningRL, LightningRLConfig, LoraSettings, NothingToTrain
from openai import AsyncOpenAI, OpenAI

import agentlightning as agl

PROMPTS = [{"prompt": f"Say something {i}"} for i in range(16)]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture
def engine(tiny_folder: Path) -> Iterator[TransformersEngine]:
    with TransformersEngine(str(tiny_folder)) as engine:  # fresh weights for every test: training changes them
        yield engine


async def _ask(llm: agl.LLM, prompt: str, max_tokens: int) -> str:
    async with AsyncOpenAI(base_url=llm.base_url, api_key="unused") as client:
        reply = await client.chat.completions.create(
            model=llm.model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            temperature=float(llm.sampling_parameters.get("temperature", 1.0)),  # type: ignore[arg-type]
        )
    return reply.choices[0].message.content or ""


def _with_greedy_first_words(engine: TransformersEngine) -> list[dict[str, Any]]:
    """The prompts, each with the untrained model's greedy first word for it: a word it samples now and then."""
    with engine.serve(port=0) as server:
        client = OpenAI(base_url=server.url, api_key="unused")
        return [
            {
                **task,
                "target": client.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": task["prompt"]}], max_tokens=1, temperature=0
                )
                .choices[0]
                .message.content,
            }
            for task in PROMPTS
        ]


def _fit(
    engine: TransformersEngine,
    config: LightningRLConfig,
    agent: Any,
    train: Any = PROMPTS,
    val: Any = None,
    temperature: float = 1.0,
    max_concurrency: int = 32,
    **kwargs: Any,
) -> Any:
    algorithm = LightningRL(engine, config, sampling={"temperature": temperature}, progress=False, **kwargs)
    trainer = agl.Trainer(algorithm=algorithm, store=agl.InMemoryStore(), max_concurrency=max_concurrency)
    return trainer.fit(agent, train, val)


def test_training_raises_the_reward_of_saying_a_target_word(engine: TransformersEngine) -> None:
    # One prompt for every task: every group trains the same first choice.
    tasks = _with_greedy_first_words(engine)[:1] * 8

    @agl.rollout
    async def say_target(task: dict[str, Any], llm: agl.LLM) -> float:
        return 1.0 if (await _ask(llm, task["prompt"], max_tokens=4)).startswith(task["target"]) else 0.0

    config = LightningRLConfig(
        iterations=10, tasks_per_iteration=4, group_size=4, learning_rate=3e-3, validate_every=0, seed=0
    )
    # Sampled cooler than the model's own distribution, which is nearly flat: the greedy word comes up often enough
    # for most groups to hold both rewards.
    result = _fit(engine, config, say_target, tasks, val=tasks * 4, temperature=0.5)

    before, after = result.initial_validation, result.final_validation
    assert (before.iteration, after.iteration) == (0, 10)
    assert before.rollouts == after.rollouts == 32
    # Sampling, the untrained model starts with that word now and then; training makes it its usual first word.
    assert after.success_rate >= before.success_rate + 0.25, (before, after)
    assert len(result.history) == 10
    trained = [r for r in result.history if r.sequences]
    assert trained, "no iteration took a step"
    assert all(r.rollouts == 16 and r.failed_rollouts == 0 for r in result.history)
    # One call per rollout, four completion tokens at most per call (EOS included when it stops early).
    assert all(r.trained_tokens <= 4 * r.sequences for r in trained)
    assert all(r.grad_norm is not None and r.grad_norm > 0 for r in trained)


@agl.rollout
async def _chatter(task: dict[str, Any], llm: agl.LLM) -> float:
    text = await _ask(llm, task["prompt"], max_tokens=3)
    return sum(c in "aeiou" for c in text) / max(len(text), 1)


def test_with_bf16_the_engine_generates_in_bf16_for_the_run_and_the_first_ratios_are_one(
    engine: TransformersEngine,
) -> None:
    seen: list[Any] = []

    @agl.rollout
    async def chatter(task: dict[str, Any], llm: agl.LLM) -> float:
        seen.append(engine.autocast_dtype)
        return await _chatter(task, llm)  # type: ignore[no-any-return]

    config = LightningRLConfig(
        iterations=1, tasks_per_iteration=4, group_size=4, seed=0, skip_equal_groups=False, precision="bf16"
    )
    result = _fit(engine, config, chatter)
    assert seen and set(seen) == {torch.bfloat16}
    assert engine.autocast_dtype is None  # given back after the run
    (record,) = result.history
    # The engine sampled in the step's arithmetic: before the update the ratios are ~1 (a KV-cached decode and a
    # full pass round differently), and next to none is clipped.
    assert record.ratio_mean == pytest.approx(1.0, abs=0.02), record
    assert record.clip_fraction is not None and record.clip_fraction < 0.05, record


def test_metrics_plot_and_checkpoint_files_and_resume(
    engine: TransformersEngine, tiny_folder: Path, tmp_path: Path
) -> None:
    files = {"metrics_dir": tmp_path / "metrics", "checkpoint_dir": tmp_path / "checkpoint"}
    config = LightningRLConfig(iterations=2, tasks_per_iteration=2, group_size=2, validate_every=1, seed=0)
    first = _fit(engine, config, _chatter, val=PROMPTS[:4], **files)

    assert [v.iteration for v in first.validations] == [0, 1, 2]
    with (tmp_path / "metrics" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [1, 2]
    assert float(rows[0]["reward_mean"]) == pytest.approx(first.history[0].reward_mean, abs=1e-6)
    with (tmp_path / "metrics" / "validation.csv").open() as f:
        assert [int(r["iteration"]) for r in csv.DictReader(f)] == [0, 1, 2]
    assert (tmp_path / "metrics" / "curve.png").read_bytes().startswith(b"\x89PNG")
    assert list((tmp_path / "metrics" / "tensorboard").glob("events.out.tfevents.*"))
    assert first.checkpoint == tmp_path / "checkpoint" / "latest"
    saved = {name: p.detach().clone() for name, p in engine.model.named_parameters()}

    # A run that logged an iteration past its last checkpoint, then crashed: resuming redoes that iteration.
    with (tmp_path / "metrics" / "metrics.csv").open("a") as f:
        f.write("3" + "," * (len(rows[0]) - 1) + "\n")

    # A new process would load the untrained model again, then the checkpoint over it.
    with TransformersEngine(str(tiny_folder)) as fresh:
        assert not torch.equal(next(fresh.model.parameters()), next(iter(saved.values())))
        longer = LightningRLConfig(iterations=3, tasks_per_iteration=2, group_size=2, validate_every=1, seed=0)
        resumed = _fit(fresh, longer, _chatter, val=PROMPTS[:4], resume=True, **files)
        # The first two iterations come from the checkpoint; only the third ran.
        assert resumed.history[:2] == first.history
        assert [r.iteration for r in resumed.history] == [1, 2, 3]
        assert [v.iteration for v in resumed.validations] == [0, 1, 2, 3]
    with (tmp_path / "metrics" / "metrics.csv").open() as f:
        assert [int(r["iteration"]) for r in csv.DictReader(f)] == [1, 2, 3]


def test_resume_loads_the_checkpointed_weights(engine: TransformersEngine, tiny_folder: Path, tmp_path: Path) -> None:
    config = LightningRLConfig(iterations=1, tasks_per_iteration=2, group_size=2, seed=0, skip_equal_groups=False)
    _fit(engine, config, _chatter, checkpoint_dir=tmp_path)
    trained = {name: p.detach().clone() for name, p in engine.model.named_parameters()}
    with TransformersEngine(str(tiny_folder)) as fresh:
        # Nothing left to run: loading the checkpoint is all this run does.
        _fit(fresh, config, _chatter, checkpoint_dir=tmp_path, resume=True)
        for name, p in fresh.model.named_parameters():
            assert torch.equal(p, trained[name]), name


def test_an_agent_that_never_calls_the_llm_stops_the_run_with_the_reason(engine: TransformersEngine) -> None:
    @agl.rollout
    async def no_llm(task: dict[str, Any], llm: agl.LLM) -> float:
        return 1.0

    with pytest.raises(NothingToTrain, match="recorded no LLM call"):
        _fit(engine, LightningRLConfig(iterations=2, tasks_per_iteration=2, group_size=2), no_llm)


def test_every_rollout_failing_stops_the_run_with_a_rollout_to_look_at(engine: TransformersEngine) -> None:
    @agl.rollout
    async def broken(task: dict[str, Any], llm: agl.LLM) -> float:
        raise RuntimeError("the agent is broken")

    with pytest.raises(NothingToTrain, match=r"Every rollout of iteration 1 failed.*agl runs show"):
        _fit(engine, LightningRLConfig(iterations=2, tasks_per_iteration=2, group_size=2), broken)


def test_only_the_selected_agents_calls_are_trained(engine: TransformersEngine) -> None:
    @agl.rollout
    async def two_agents(task: dict[str, Any], llm: agl.LLM) -> float:
        text = await _ask(llm.for_agent("writer"), task["prompt"], max_tokens=3)
        await _ask(llm.for_agent("checker"), text, max_tokens=2)
        return sum(c in "aeiou" for c in text) / max(len(text), 1)

    config = LightningRLConfig(iterations=2, tasks_per_iteration=2, group_size=2, agents=["writer"], seed=0)
    result = _fit(engine, config, two_agents)
    for record in result.history:
        # Each rollout made one writer call and one checker call; only the writer's are trained, and every
        # group of distinct rewards contributes its rollouts' writer calls.
        trained_rollouts = (2 - record.skipped_groups) * 2
        assert record.sequences == trained_rollouts


def test_a_non_transformers_engine_is_refused_with_what_works() -> None:
    with pytest.raises(TypeError, match="TransformersEngine"):
        LightningRL(object())


def test_resume_without_a_checkpoint_folder_is_refused(engine: TransformersEngine) -> None:
    with pytest.raises(ValueError, match="checkpoint_dir"):
        LightningRL(engine, resume=True)


def test_lora_trains_the_adapter_the_engine_serves_and_checkpoints_only_it(
    engine: TransformersEngine, tmp_path: Path
) -> None:
    base = {name: p.detach().clone() for name, p in engine.model.named_parameters()}
    config = LightningRLConfig(
        iterations=2,
        tasks_per_iteration=2,
        group_size=2,
        learning_rate=1e-2,
        skip_equal_groups=False,
        lora=LoraSettings(rank=2, alpha=4),
    )
    result = _fit(engine, config, _chatter, checkpoint_dir=tmp_path)
    assert all(r.sequences == 4 for r in result.history)
    # The adapter went into the engine's own module: the engine generates with it.
    parameters = dict(engine.model.named_parameters())
    adapters = {name: p for name, p in parameters.items() if "lora_" in name}
    assert adapters and any(bool(p.abs().sum() > 0) for name, p in adapters.items() if "lora_B" in name)
    for name, before in base.items():  # every base weight as it was (peft renames them "base_layer")
        now = parameters.get(name, parameters.get(name.replace(".weight", ".base_layer.weight")))
        assert now is not None and torch.equal(now, before), name
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "latest" / "weights.safetensors"))
    # Named as in the peft model that was trained ("base_model.model." + the module's own name).
    assert sorted(name.removeprefix("base_model.model.") for name in saved) == sorted(adapters)


def test_an_adapter_per_agent_trains_each_agents_own_while_the_others_call_the_base_model(
    engine: TransformersEngine,
) -> None:
    base = {name: p.detach().clone() for name, p in engine.model.named_parameters()}
    answered_by: dict[str, set[str]] = {"writer": set(), "checker": set(), "reader": set()}

    async def ask(llm: agl.LLM, agent: str, prompt: str) -> str:
        async with AsyncOpenAI(base_url=llm.for_agent(agent).base_url, api_key="unused") as client:
            reply = await client.chat.completions.create(
                model=llm.model, messages=[{"role": "user", "content": prompt}], max_tokens=3, temperature=1.0
            )
        answered_by[agent].add(reply.model)
        return reply.choices[0].message.content or ""

    @agl.rollout
    async def three_agents(task: dict[str, Any], llm: agl.LLM) -> float:
        text = await ask(llm, "writer", task["prompt"])
        text += await ask(llm, "checker", text)
        text += await ask(llm, "reader", text)  # not trained: the environment
        return sum(c in "aeiou" for c in text) / max(len(text), 1)

    config = LightningRLConfig(
        iterations=2,
        tasks_per_iteration=2,
        group_size=2,
        learning_rate=1e-2,
        skip_equal_groups=False,
        agents=["writer", "checker"],
        lora=LoraSettings(rank=2, alpha=4, adapter_per_agent=True),
    )
    algorithm = LightningRL(engine, config, progress=False)
    result = agl.Trainer(algorithm=algorithm, store=agl.InMemoryStore()).fit(three_agents, PROMPTS)
    assert all(r.sequences == 8 for r in result.history)  # 4 rollouts x (writer + checker)

    name = engine.model_name
    assert algorithm.agent_models == {"writer": f"{name}@writer", "checker": f"{name}@checker"}
    # The gateway sent each trained agent's calls to its own adapter, the others' to the base model.
    assert answered_by == {"writer": {f"{name}@writer"}, "checker": {f"{name}@checker"}, "reader": {name}}
    parameters = dict(engine.model.named_parameters())
    for agent in ("writer", "checker"):
        trained = [p for n, p in parameters.items() if f"lora_B.agent_{agent}." in n]
        assert trained and any(bool(p.abs().sum() > 0) for p in trained), agent
    assert not any("reader" in n for n in parameters)
    for weight, before in base.items():  # the base model, which the reader calls, as it was
        now = parameters.get(weight, parameters.get(weight.replace(".weight", ".base_layer.weight")))
        assert now is not None and torch.equal(now, before), weight


def test_a_trained_agents_call_that_missed_its_adapter_stops_the_run(engine: TransformersEngine) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    from agentlightning import semconv
    from agentlightning.tracer import begin_span, propagate_traceparent

    propagate_traceparent()  # the gateway's span of the call joins the writer's span below

    @agl.rollout
    async def unrouted_writer(task: dict[str, Any], llm: agl.LLM) -> float:
        # The writer's span is the call's parent, but neither the current span nor the URL names the agent (a
        # tracer that does not tell the gateway): the call reaches the base model.
        span = begin_span("invoke_agent writer", attributes={semconv.GEN_AI_AGENT_NAME: "writer"})
        assert span is not None
        context = SpanContext(int(span.trace_id, 16), int(span.span_id, 16), False, TraceFlags(TraceFlags.SAMPLED))
        with trace.use_span(NonRecordingSpan(context), end_on_exit=False):
            await _ask(llm, task["prompt"], max_tokens=2)
        span.end()
        return 1.0

    config = LightningRLConfig(
        iterations=1,
        tasks_per_iteration=1,
        group_size=2,
        agents=["writer"],
        lora=LoraSettings(rank=2, alpha=4, adapter_per_agent=True),
    )
    with pytest.raises(agl_rl.AdapterNotUsed, match=r"agent 'writer'.*llm.for_agent\('writer'\)"):
        _fit(engine, config, unrouted_writer)
