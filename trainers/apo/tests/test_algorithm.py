"""APO's loop through the whole stack: runners, the store, the gateway in front of a scripted model server that
plays the agent's model and the optimizer. The agent's reward depends on keywords its prompt holds (the model
repeats them), and the scripted optimizer proposes edits that add keywords, so every score is known in advance."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from agentlightning_apo import APO, APOConfig, APOResult, NoPromptToOptimize, OptimizerError
from openai import AsyncOpenAI
from scripted import CRITIQUE_MARK, KEYWORDS, Script, appending

import agentlightning as agl

SEED = "Answer the question {question}."


def task(name: str, **weights: float) -> agl.Task:
    """A task whose reward is the highest weight among the keywords the model's answer holds (0 if none)."""
    return agl.Task(id=name, input={"question": name, "weights": weights})


async def _ask(llm: agl.LLM, system: str, question: str) -> str:
    async with AsyncOpenAI(base_url=llm.base_url, api_key="unused") as client:
        reply = await client.chat.completions.create(
            model=llm.model,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
            max_tokens=16,
            temperature=0,
        )
    return reply.choices[0].message.content or ""


def _reward(task: Mapping[str, Any], answer: str) -> float:
    weights: Mapping[str, float] = task["weights"]
    return max((w for word, w in weights.items() if word in answer.split()), default=0.0)


@agl.rollout
async def answerer(task: dict[str, Any], llm: agl.LLM, prompt_template: agl.PromptTemplate) -> float:
    return _reward(task, await _ask(llm, prompt_template.format(question=task["question"]), task["question"]))


def _fit(
    store: agl.LightningStore,
    server: Any,
    config: APOConfig,
    agent: Any,
    train: Any,
    val: Any,
    prompts: Mapping[str, agl.PromptTemplate] | None = None,
    progress: bool = False,
    **kwargs: Any,
) -> APOResult:
    """Run APO with the agent's LLM behind a gateway (so its calls are recorded) and the optimizer at the server."""
    with agl.Gateway(server.url, store) as gateway:
        resources: dict[str, agl.AnyResource] = {"llm": gateway.llm("scripted")}
        resources.update(prompts or {"prompt_template": agl.PromptTemplate(template=SEED)})
        config = dataclasses.replace(config, optimizer_base_url=server.url, optimizer_model="scripted")
        apo = APO(config, progress=progress, **kwargs)
        trainer = agl.Trainer(algorithm=apo, store=store, initial_resources=resources, max_concurrency=16)
        result: APOResult = trainer.fit(agent, train, val)
        return result


def _words(text: str) -> set[str]:
    return {word for word in KEYWORDS if word in text}


def test_beam_search_keeps_the_best_and_returns_the_best_scored_prompt(
    store: agl.SqliteStore, server: Any, script: Script, tmp_path: Path
) -> None:
    script.edit = appending("alpha", "beta")
    train = [task(f"train{i}", alpha=1.0) for i in range(4)]
    val = [task("v0", alpha=1.0), task("v1", alpha=0.5, beta=1.0), task("v2", beta=0.25)]
    config = APOConfig(rounds=2, beam_width=2, branch_factor=2, train_batch_size=2, seed=0)
    result = _fit(store, server, config, answerer, train, val, history_path=tmp_path / "apo.json")

    by_id = {c.id: c for c in result.candidates}
    seed = result.seed
    assert seed.id == "c0" and seed.prompts == {"prompt_template": SEED}
    assert seed.score == 0.0 and seed.task_scores == {"v0": 0.0, "v1": 0.0, "v2": 0.0}

    # Round 1 expands the seed: one child adds alpha (scores 1, .5, 0), the other beta (0, 1, .25).
    first = result.rounds[0]
    assert first.parents == ["c0"] and len(first.minibatch) == 2 and not first.skipped
    assert sorted(_words(by_id[c].prompts["prompt_template"]).pop() for c in first.children) == ["alpha", "beta"]
    scores = {next(iter(_words(by_id[c].prompts["prompt_template"]))): by_id[c].task_scores for c in first.children}
    assert scores == {"alpha": {"v0": 1.0, "v1": 0.5, "v2": 0.0}, "beta": {"v0": 0.0, "v1": 1.0, "v2": 0.25}}
    # Beam: the two best means (alpha .5, beta .42); the seed (0) drops out.
    assert sorted(first.beam) == sorted(first.children)
    assert first.beam[0] == first.best and by_id[first.best].score == pytest.approx(0.5)

    # Round 2 expands both: "… alpha beta" and "… beta alpha" score 1, 1, .25 (the older one is the best).
    second = result.rounds[1]
    assert second.parents == first.beam
    assert len(second.children) == 4 and not second.skipped
    assert all(by_id[c].parent in first.beam and by_id[c].round == 2 for c in second.children)
    assert result.best_score == pytest.approx(0.75) == max(c.score for c in result.candidates)
    assert _words(result.best_prompt.template) == {"alpha", "beta"}
    assert result.best_prompt.format(question="q").startswith("Answer the question q.")
    assert second.best == result.best.id and second.beam[0] == result.best.id

    # Every candidate is a resources version holding its text, the agent's LLM unchanged; rollouts name it.
    published = [asyncio.run(store.get_resources_by_id(c.resources_id or "")) for c in result.candidates]
    assert [p.resources["prompt_template"].template for p in published] == [  # type: ignore[union-attr]
        c.prompts["prompt_template"] for c in result.candidates
    ]
    assert len({p.resources["llm"].model_dump_json() for p in published}) == 1
    rollouts = asyncio.run(store.query_rollouts())
    assert all(by_id[str(r.metadata["apo_candidate"])].resources_id == r.resources_id for r in rollouts)
    val_rollouts = [r for r in rollouts if r.mode == agl.RolloutMode.VAL]
    assert len(val_rollouts) == 3 * len(result.candidates)
    # Round 1 ran the seed on the minibatch, round 2 both beam candidates.
    assert len([r for r in rollouts if r.mode == agl.RolloutMode.TRAIN]) == 2 * 1 + 2 * 2

    # The critique read the runs: the task, the reward, the agent's messages through the gateway.
    critiques = [text for kind, text in script.requests if kind == "critique"]
    assert len(critiques) == 2 + 4
    assert "reward 0," in critiques[0] and "Task: " in critiques[0] and "system: Answer the question" in critiques[0]
    assert "assistant: nothing" in critiques[0]

    history = json.loads((tmp_path / "apo.json").read_text())
    assert history["best"] == result.best.id and history["seed_score"] == 0.0
    assert history["best_score"] == pytest.approx(0.75)
    assert [c["id"] for c in history["candidates"]] == [c.id for c in result.candidates]
    assert [r["beam"] for r in history["rounds"]] == [first.beam, second.beam]
    assert history["candidates"][1]["parent"] == "c0" and history["candidates"][1]["critique"]


def test_unusable_replies_are_skipped_with_a_logged_reason(
    store: agl.SqliteStore, server: Any, script: Script, caplog: pytest.LogCaptureFixture
) -> None:
    replies = iter(
        [
            "I would keep it as it is.",  # no <prompt> block
            "<prompt>Answer alpha.</prompt>",  # drops {question}
            "<prompt>Answer {question} about {topic} alpha.</prompt>",  # adds a placeholder
            "<prompt>Answer {question alpha.</prompt>",  # not a format string
            "<prompt>Answer {question} with alpha.</prompt>",  # usable
        ]
    )
    script.edit = lambda request: next(replies)
    config = APOConfig(rounds=1, beam_width=1, branch_factor=5, train_batch_size=1, optimizer_concurrency=1)
    with caplog.at_level(logging.WARNING, logger="agentlightning_apo"):
        result = _fit(store, server, config, answerer, [task("t", alpha=1.0)], [task("v", alpha=1.0)])

    reasons = sorted(s.reason for s in result.skipped)
    assert len(reasons) == 4, reasons
    assert any("no <prompt>" in r for r in reasons)
    assert any("drops placeholder(s) question" in r for r in reasons)
    assert any("adds placeholder(s) topic" in r for r in reasons)
    assert any("not a valid f-string template" in r for r in reasons)
    assert sum("skipped" in record.getMessage() for record in caplog.records) == 4
    (child,) = result.rounds[0].children
    assert result.best.id == child and result.best_prompt.template == "Answer {question} with alpha."
    assert result.best_score == 1.0


def test_a_run_never_ends_worse_than_its_seed(store: agl.SqliteStore, server: Any, script: Script) -> None:
    replies = iter(["<prompt>Answer {question} with gamma.</prompt>", "<prompt>Answer {question} with delta.</prompt>"])
    script.edit = lambda request: next(replies)  # both worse than the seed, which says alpha
    seed = "Answer {question} with alpha."
    config = APOConfig(
        rounds=1, beam_width=2, branch_factor=2, train_batch_size=1, val_batch_size=2, val_rollouts_per_task=2
    )
    val = [task(f"v{i}", alpha=0.5) for i in range(3)]
    prompts = {"prompt_template": agl.PromptTemplate(template=seed)}
    result = _fit(store, server, config, answerer, [task("t", alpha=1.0)], val, prompts=prompts)

    assert len(result.candidates) == 3
    assert all(c.score < result.seed_score == 0.5 for c in result.candidates[1:])
    assert result.best is result.seed and result.best_prompt.template == seed
    assert result.rounds[0].beam[0] == "c0"
    # Every candidate is scored on the same two validation tasks (drawn once), twice each.
    tasks = set(result.seed.task_scores)
    assert len(tasks) == 2 and all(set(c.task_scores) == tasks and c.rollouts == 4 for c in result.candidates)


@pytest.mark.parametrize(("selection", "kept"), [("beam", {"beta", "gamma"}), ("pareto", {"beta", "alpha"})])
def test_pareto_selection_keeps_a_candidate_that_is_best_on_some_task(
    store: agl.SqliteStore, server: Any, script: Script, selection: str, kept: set[str]
) -> None:
    script.edit = appending("alpha", "beta", "gamma")
    # alpha: 1, 0, 0 (mean .33, best on v0); beta: 0, 1, .6 (.53); gamma: 0, .6, .5 (.37, best on nothing).
    val = [task("v0", alpha=1.0), task("v1", beta=1.0, gamma=0.6), task("v2", beta=0.6, gamma=0.5)]
    config = APOConfig(rounds=1, beam_width=2, branch_factor=3, train_batch_size=1, selection=selection)  # type: ignore[arg-type]
    result = _fit(store, server, config, answerer, [task("t", alpha=1.0)], val)

    by_id = {c.id: c for c in result.candidates}
    beam = result.rounds[0].beam
    assert {w for c in beam for w in _words(by_id[c].prompts["prompt_template"])} == kept
    assert _words(by_id[beam[0]].prompts["prompt_template"]) == {"beta"}  # the best mean comes first
    assert _words(result.best_prompt.template) == {"beta"}


PLANNER = "Plan for {question}."
WRITER = "Write about {question} from {plan}."
JUDGE = "Judge {answer}."


@agl.rollout
async def team(task: dict[str, Any], resources: agl.Resources) -> float:
    """Two agents in a row, each with its own prompt and its own attributed calls; the judge prompt is fixed."""
    llm = resources.get("llm", agl.LLM)
    planner = resources.get("planner_prompt", agl.PromptTemplate).format(question=task["question"])
    plan = await _ask(llm.for_agent("planner"), planner, task["question"])
    writer = resources.get("writer_prompt", agl.PromptTemplate).format(question=task["question"], plan=plan)
    answer = await _ask(llm.for_agent("writer"), writer, task["question"])
    resources.get("judge_prompt", agl.PromptTemplate).format(answer=answer)
    return _reward(task, f"{plan} {answer}")


def test_several_prompts_only_the_selected_ones_each_critiqued_on_its_own_agent(
    store: agl.SqliteStore, server: Any, script: Script
) -> None:
    script.edit = appending("beta")
    prompts = {
        "planner_prompt": agl.PromptTemplate(template=PLANNER),
        "writer_prompt": agl.PromptTemplate(template=WRITER),
        "judge_prompt": agl.PromptTemplate(template=JUDGE),
    }
    config = APOConfig(
        rounds=1,
        beam_width=2,
        branch_factor=2,
        train_batch_size=1,
        prompts=["planner_prompt", "writer_prompt"],
        prompt_agents={"planner_prompt": ["planner"], "writer_prompt": ["writer"]},
    )
    val = [task("v", beta=1.0)]
    result = _fit(store, server, config, team, [task("t", beta=1.0)], val, prompts=prompts)

    assert result.seed.prompts == {"planner_prompt": PLANNER, "writer_prompt": WRITER}
    children = [c for c in result.candidates if c.round == 1]
    # The two edits of the seed take turns: one changes the planner's prompt, the other the writer's.
    assert sorted(c.edited or "" for c in children) == ["planner_prompt", "writer_prompt"]
    for child in children:
        other = "writer_prompt" if child.edited == "planner_prompt" else "planner_prompt"
        assert child.prompts[other] == result.seed.prompts[other]
        assert child.prompts[child.edited or ""].endswith(" beta") and child.score == 1.0
        published = asyncio.run(store.get_resources_by_id(child.resources_id or "")).resources
        assert published["judge_prompt"].template == JUDGE  # type: ignore[union-attr]
    assert set(result.best_prompts) == {"planner_prompt", "writer_prompt"}
    with pytest.raises(ValueError, match="best_prompts"):
        _ = result.best_prompt

    # Each critique shows only the calls of the agent its prompt shapes.
    critiques = [text for kind, text in script.requests if kind == "critique"]
    planner = next(text for text in critiques if "`planner_prompt`" in text)
    writer = next(text for text in critiques if "`writer_prompt`" in text)
    assert "by agent planner" in planner and "by agent writer" not in planner
    assert "by agent writer" in writer and "by agent planner" not in writer


def test_a_prompt_that_is_not_among_the_resources_is_refused(store: agl.SqliteStore, server: Any) -> None:
    config = APOConfig(prompts=["missing_prompt"])
    with pytest.raises(NoPromptToOptimize, match="'missing_prompt'"):
        _fit(store, server, config, answerer, [task("t", alpha=1.0)], None)


def test_replaced_optimizer_prompts_and_the_printed_progress(
    store: agl.SqliteStore, server: Any, script: Script, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    critique = tmp_path / "critique.md"
    critique.write_text(
        CRITIQUE_MARK + "\nMY OWN CRITIQUE of {prompt_name} ({placeholders}) at {reward}:\n{template}\n{runs}\n"
    )
    config = APOConfig(rounds=1, beam_width=1, branch_factor=1, train_batch_size=1, critique_prompt_path=critique)
    result = _fit(store, server, config, answerer, [task("t", alpha=1.0)], [task("v", alpha=1.0)], progress=True)

    (request,) = [text for kind, text in script.requests if kind == "critique"]
    assert "MY OWN CRITIQUE of prompt_template ({question}) at 0.000:" in request
    assert result.best_score == 1.0
    printed = "".join(capsys.readouterr())
    assert "APO round 1: best c1 (1.000)" in printed and "candidates=2" in printed


def test_an_unreachable_optimizer_stops_the_run_with_what_to_check(store: agl.SqliteStore, server: Any) -> None:
    config = APOConfig(rounds=2, beam_width=1, branch_factor=1, train_batch_size=1)
    unreachable = agl.LLM(base_url="http://127.0.0.1:9/v1", model="nobody")  # the discard port: nothing listens
    with pytest.raises(OptimizerError, match=r"Every optimizer call of round 1 failed .* 'nobody'"):
        _fit(store, server, config, answerer, [task("t", alpha=1.0)], [task("v", alpha=1.0)], optimizer_llm=unreachable)


@agl.rollout
async def breaks_on_boom(task: dict[str, Any], llm: agl.LLM, prompt_template: agl.PromptTemplate) -> float:
    answer = await _ask(llm, prompt_template.format(question=task["question"]), task["question"])
    if task["question"] == "boom":
        raise RuntimeError("the tool broke")
    return _reward(task, answer)


def test_failed_runs_reach_the_critique_and_score_the_missing_reward(
    store: agl.SqliteStore, server: Any, script: Script
) -> None:
    config = APOConfig(rounds=1, beam_width=1, branch_factor=1, train_batch_size=2, missing_reward=-1.0)
    train = [task("boom", alpha=1.0), task("fine", alpha=1.0)]
    result = _fit(store, server, config, breaks_on_boom, train, [task("boom", alpha=1.0), task("v", alpha=1.0)])

    (critique,) = [text for kind, text in script.requests if kind == "critique"]
    assert "reward -1, FAILED (failed)" in critique and "Error: RuntimeError: the tool broke" in critique
    assert "mean reward of -0.500" in critique
    assert critique.index("FAILED") < critique.index("reward 0, succeeded")  # lowest reward first
    assert result.seed.task_scores == {"boom": -1.0, "v": 0.0} and result.seed.failed_rollouts == 1
    assert result.best.task_scores == {"boom": -1.0, "v": 1.0}
