"""The triage example (examples/triage): the OpenAI Agents SDK agent run by ``Trainer.dev`` through a real
``agl.Gateway`` in front of a real ``TransformersEngine``, and train.py (its generator and reward:
test_triage_dataset.py).

The agent's engine serves a scripted stand-in model that plays the three agents (hand-offs, right and wrong tool
calls, a call of a tool that does not exist, a triage that answers itself), so the rewards and the routes are
known. train.py runs on a tiny Llama first taught (in under a minute) to say one hand-off and one tool call on the
smoke run's questions: a random model never hands off, and a run with no call of the trained agent cannot train.
Everything listens on 127.0.0.1; nothing reaches the internet.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agentlightning_engine import EngineServer
from agentlightning_engine.testing import load_smollm2_tokenizer, serve_scripted
from agentlightning_openai_agents import HANDOFF_FROM, HANDOFF_TO, uninstrument
from test_triage_dataset import MATH_QUESTION, parse_units

import agentlightning as agl
from agentlightning import semconv
from agentlightning.testing import no_outbound_connections as no_outbound_connections
from agentlightning.testing import store as store
from examples import EXAMPLES, load_example, teach, tiny_llama

EXAMPLE = EXAMPLES / "triage"
dataset = load_example("triage", "dataset")
triage = load_example("triage", "agent")


@pytest.fixture(scope="module", autouse=True)
def sdk_tracing_restored() -> Iterator[None]:
    """The agent instruments the Agents SDK in this process; give the SDK its own processors back afterwards."""
    yield
    uninstrument()


# --- the agent through the gateway and the engine --------------------------------------------------------------


def tool_call(name: str, **arguments: Any) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def scripted_reply(prompt: str) -> str:
    """The scripted model. It reads the system message (whose instructions) and the last question:

    - triage hands off to the question's specialist, except "Compute ..." questions, which it answers itself;
    - units converts right when the value is even, with the units swapped when it is odd;
    - math adds or multiplies right when the first number is even, and calls a tool that does not exist when odd.
    """
    turns = re.findall(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>", prompt, re.DOTALL)
    system, question = turns[0][1], [text for role, text in turns if role == "user"][-1]
    if system == triage.TRIAGE_INSTRUCTIONS:
        if match := MATH_QUESTION.fullmatch(question):
            if question.startswith("Compute"):
                a, word, b = int(match[1]), match[2], int(match[3])
                return f"That is {a + b if word == 'plus' else a * b}."
            return tool_call("transfer_to_math")
        return tool_call("transfer_to_units")
    if system == triage.UNITS_INSTRUCTIONS:
        value, source, target, _ = parse_units(question)
        if value % 2:
            source, target = target, source
        return tool_call("convert", value=value, from_unit=source, to_unit=target)
    if system == triage.MATH_INSTRUCTIONS:
        match = MATH_QUESTION.fullmatch(question)
        assert match, question
        a, word, b = int(match[1]), match[2], int(match[3])
        if a % 2:
            return tool_call("subtract", a=a, b=b)
        return tool_call("add" if word == "plus" else "multiply", a=a, b=b)
    raise AssertionError(f"an unknown agent's prompt: {system!r}")


def expected(task: agl.Task) -> tuple[str | None, float]:
    """Whom the scripted triage hands ``task`` to, and the reward the run earns."""
    assert isinstance(task.input, dict)
    question = str(task.input["question"])
    if task.input["specialist"] == "units":
        return "units", 0.0 if parse_units(question)[0] % 2 else 1.0
    if question.startswith("Compute"):
        return None, 1.0  # the triage's own answer is right, and the reward reads any final output
    match = MATH_QUESTION.fullmatch(question)
    assert match
    return "math", 0.0 if int(match[1]) % 2 else 1.0


@pytest.fixture(scope="module")
def scripted_server() -> Iterator[EngineServer]:
    with serve_scripted(scripted_reply) as server:
        yield server


def spans_of(store: agl.SqliteStore, rollout: agl.Rollout) -> list[agl.Span]:
    return asyncio.run(store.query_spans(rollout.rollout_id, "latest"))


def test_each_question_is_routed_answered_by_a_tool_and_rewarded(
    scripted_server: EngineServer, store: agl.SqliteStore
) -> None:
    tasks = dataset.make_tasks(16, 4, seed=5)
    outcomes = [expected(task) for task in tasks]
    assert {route for route, _ in outcomes} == {"units", "math", None}  # every path is there
    assert {reward for _, reward in outcomes} == {0.0, 1.0}
    with agl.Gateway(scripted_server.url, store) as gateway:
        llm = gateway.llm("scripted", temperature=0.7)
        result = agl.Trainer(store=store, initial_resources={"llm": llm}, max_concurrency=8).dev(
            triage.triage_agent, tasks
        )
    # A call of a tool that does not exist ends the run with reward 0, not a failed rollout.
    assert result.succeeded == len(tasks)
    by_task = {str(rollout.metadata["task_id"]): (rollout, reward) for rollout, reward in result.rollouts}
    for task, (route, reward) in zip(tasks, outcomes, strict=True):
        rollout, got = by_task[task.id]
        assert got == reward, (task.input, got)
        spans = spans_of(store, rollout)
        assert triage.specialist(spans) == route
        calls = agl.TraceToTrajectory().adapt(spans).transitions
        assert [call.agent_name for call in calls] == (["triage"] if route is None else ["triage", route])
        assert all(call.has_token_ids and call.logprobs for call in calls)


def test_the_specialist_sees_its_examples_and_the_question_and_the_triage_decides_greedily(
    scripted_server: EngineServer, store: agl.SqliteStore
) -> None:
    (task,) = dataset.make_tasks(1, 4, seed=0, kinds=["units"])
    question = str(task.input["question"])
    with agl.Gateway(scripted_server.url, store) as gateway:
        llm = gateway.llm("scripted", temperature=0.7)
        result = agl.Trainer(store=store, initial_resources={"llm": llm}).dev(triage.triage_agent, [task])
    spans = spans_of(store, result.rollouts[0][0])
    first, second = agl.TraceToTrajectory().adapt(spans).transitions
    # Each agent's prompt: its instructions, its worked examples as earlier turns, then the question; the units
    # agent does not see the triage's examples nor the hand-off.
    for call, agent in ((first, triage.TRIAGE), (second, triage.UNITS)):
        examples = [
            message
            for question_, reply in triage.EXAMPLES[agent]
            for message in ({"role": "user", "content": question_}, {"role": "assistant", "content": reply})
        ]
        assert [(m["role"], m["content"]) for m in call.input_messages] == [
            ("system", triage.TRIAGE_INSTRUCTIONS if agent == triage.TRIAGE else triage.UNITS_INSTRUCTIONS),
            *[(m["role"], m["content"]) for m in examples],
            ("user", question),
        ]
    # The SDK's records: the hand-off, the tool call with its arguments and result, each under its agent.
    by_type = {str(s.attributes.get("openai_agents.span.type")): s for s in spans}
    handoff, tool = by_type["handoff"], by_type["function"]
    assert (handoff.attributes[HANDOFF_FROM], handoff.attributes[HANDOFF_TO]) == ("triage", "units")
    assert tool.attributes[semconv.GEN_AI_TOOL_NAME] == "convert"
    assert tool.attributes[semconv.GEN_AI_AGENT_NAME] == "units"
    value, source, target, _ = parse_units(question)
    if value % 2:  # the scripted units agent swaps them
        source, target = target, source
    arguments = {"value": value, "from_unit": source, "to_unit": target}
    assert json.loads(str(tool.attributes[semconv.GEN_AI_TOOL_CALL_ARGUMENTS])) == arguments
    # The router samples greedily; the specialist as the resource says.
    gateway_calls = sorted((s for s in spans if s.attributes.get(semconv.AGL_LLM_GATEWAY)), key=lambda s: s.start_time)
    assert [s.attributes.get(semconv.GEN_AI_REQUEST_TEMPERATURE) for s in gateway_calls] == [0.0, 0.7]


# --- the training script on a tiny model -----------------------------------------------------------------------


# The smoke run's questions: train.py draws them from these seeds of the generator.
SMOKE_TRAIN = dataset.make_tasks(1, dataset.DEFAULT_LEVEL, seed=1000, kinds=["units"])
SMOKE_VAL = dataset.make_tasks(1, dataset.DEFAULT_LEVEL, seed=2000, kinds=["units"])
SMOKE_VAL += dataset.make_tasks(1, dataset.DEFAULT_LEVEL, seed=2000, kinds=["math"])


@pytest.fixture(scope="module")
def taught_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama (SmolLM2's tokenizer) taught, on the smoke run's questions, that the triage agent hands every
    question to units, and that units answers every question with the conversion the training question asks for:
    right on it, wrong on the others. (Replies that depend on the question take a tiny model far longer to learn.)"""
    tokenizer = load_smollm2_tokenizer()
    model = tiny_llama(tokenizer)
    (trained,) = SMOKE_TRAIN
    value, source, target, _ = parse_units(str(trained.input["question"]))
    conversion = tool_call("convert", value=value, from_unit=source, to_unit=target)
    lessons = []
    for task in SMOKE_TRAIN + SMOKE_VAL:
        question = str(task.input["question"])
        for agent, instructions, reply in (
            (triage.TRIAGE, triage.TRIAGE_INSTRUCTIONS, tool_call("transfer_to_units")),
            (triage.UNITS, triage.UNITS_INSTRUCTIONS, conversion),
        ):
            messages = [{"role": "system", "content": instructions}]
            for example, example_reply in triage.EXAMPLES[agent]:
                messages += [{"role": "user", "content": example}, {"role": "assistant", "content": example_reply}]
            messages.append({"role": "user", "content": question})
            prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            lessons.append((prompt, reply + "<|im_end|>"))
    teach(model, tokenizer, lessons)
    folder = tmp_path_factory.mktemp("taught")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_the_training_script_trains_units_and_reports_each_specialist(taught_model: Path, tmp_path: Path) -> None:
    # The README's command, shrunk: two iterations of one units question on the tiny model, greedy validation.
    arguments = ["--model", str(taught_model), "--iterations", "2", "--tasks-per-iteration", "1", "--group-size", "2"]
    arguments += ["--train-tasks", "1", "--val-units", "1", "--val-math", "1", "--val-temperature", "0", "--out", "run"]
    result = subprocess.run(
        [sys.executable, str(EXAMPLE / "train.py"), *arguments],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # a tiny model gains nothing from threads; a busy CPU loses
    )
    assert result.returncode == 0, result.stderr
    out, run = result.stdout, tmp_path / "run"
    assert "Training the units agent of " in out and "validation on 1 units and 1 math questions" in out
    # The taught triage hands both questions to units, which converts as the training question asks: wrong here.
    units = "0.0% (0/1 right; triage handed it 1/1, it called a tool for 1/1)"
    assert f"units accuracy (trained) before training: {units}" in out
    assert re.search(
        r"units accuracy \(trained\) after 2 iterations: \d+\.\d% \(\d/1 right; triage handed it 1/1, ", out
    )
    assert (
        "math accuracy (not trained) before training: 0.0% (0/0 right; triage handed it 0/1, it called a tool for 0/0)"
        in out
    )
    # Only units' calls are answered by its own adapter; triage's by the base model.
    assert f"calls answered by (after 2 iterations): triage -> {taught_model}, units -> {taught_model}@units" in out
    assert re.search(r"whole agent \(every validation question\) before: \d+\.\d%, after 2 iterations: ", out)
    assert re.search(r"LightningRL: 100%.* 2/2 ", result.stderr)
    for line, path in (
        ("plot:", run / "metrics" / "curve.png"),
        ("metrics:", run / "metrics" / "metrics.csv"),
        ("store:", run / "runs.db"),
        ("checkpoint:", run / "checkpoint" / "latest"),
    ):
        assert line in out and str(path) in out
        assert path.exists(), path
    with (run / "metrics" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [row["iteration"] for row in rows] == ["1", "2"]
    assert all(row["failed_rollouts"] == "0" for row in rows)
