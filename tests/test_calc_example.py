"""The calc example (examples/calc): its task generator, its lenient answer parser, and the LangGraph agent run by
``Trainer.dev`` through a real ``agl.Gateway`` in front of a real ``TransformersEngine``.

The engine serves a tiny random Llama with SmolLM2's tokenizer, or a scripted stand-in model that answers some
questions right and some wrong, so the rewards are known. The script itself (calc.py) runs on the tiny model.
Everything listens on 127.0.0.1; nothing reaches the internet.
"""

from __future__ import annotations

import asyncio
import csv
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["LANGSMITH_TRACING"] = "false"
os.environ["LANGCHAIN_TRACING_V2"] = "false"

from agentlightning_engine import TransformersEngine
from agentlightning_engine.testing import save_tiny_model, serve_scripted

import agentlightning as agl
from agentlightning import semconv
from examples import EXAMPLES, load_example

# The random model never stops on its own: cap its calls (the resource's max_tokens caps each node's) to stay fast.
MAX_TOKENS = 12
EXAMPLE = EXAMPLES / "calc"
dataset = load_example("calc", "dataset")
calc = load_example("calc", "agent")


# --- the dataset -----------------------------------------------------------------------------------------------


def expression(task: agl.Task) -> str:
    match = re.fullmatch(r"What is (.+)\?", str(task.input["question"]))
    assert match, task.input
    return match.group(1)


def test_tasks_are_seeded() -> None:
    assert dataset.make_tasks(20, 4, seed=1) == dataset.make_tasks(20, 4, seed=1)
    assert dataset.make_tasks(20, 4, seed=1) != dataset.make_tasks(20, 4, seed=2)
    assert dataset.make_tasks(5, 4, seed=1) == dataset.make_tasks(20, 4, seed=1)[:5]  # more tasks extend, not reshuffle
    assert len({task.id for task in dataset.make_tasks(50, 2)}) == 50


@pytest.mark.parametrize("level", sorted(dataset.LEVELS))
def test_each_level_makes_the_questions_it_says_and_their_answers_are_right(level: int) -> None:
    difficulty = dataset.LEVELS[level]
    tasks = dataset.make_tasks(200, level, seed=3)
    operators_seen = set()
    for task in tasks:
        text = expression(task)
        numbers, operators = re.findall(r"\d+", text), re.findall(r"[-+*]", text)
        assert len(numbers) == difficulty.operands and len(operators) == difficulty.operands - 1
        assert all(len(number) == difficulty.digits for number in numbers)
        operators_seen.update(operators)
        assert task.input["answer"] == eval(text), task  # Python's own arithmetic
    assert operators_seen == set(difficulty.operators)


def test_the_difficulty_knob_changes_the_tasks() -> None:
    questions = {level: [t.input["question"] for t in dataset.make_tasks(30, level)] for level in dataset.LEVELS}
    assert len({tuple(q) for q in questions.values()}) == len(dataset.LEVELS)
    custom = dataset.make_tasks(10, dataset.Difficulty(operands=5, digits=3, operators="*"))
    assert all(len(re.findall(r"\b\d{3}\b", expression(t))) == 5 for t in custom)
    assert all(t.input["answer"] == eval(expression(t)) for t in custom)
    with pytest.raises(ValueError, match="No difficulty level 99"):
        dataset.make_tasks(1, 99)
    with pytest.raises(ValueError, match="operators"):
        dataset.Difficulty(operators="/")
    assert dataset.DEFAULT_LEVEL in dataset.LEVELS


# --- the reward: lenient parsing of the final number -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("42", 42),
        ("The answer is 42.", 42),
        ("The final answer is 1,234.", 1234),
        ("12 + 25 = 37", 37),
        ("x = -7", -7),
        ("The answer is -5.", -5),
        ("(-3)", -3),
        ("\u22128", -8),  # a Unicode minus
        ("60-12=48", 48),  # minus between numbers is an operator, not a sign
        ("12 - 5", 5),
        ("It costs $2.50", 2.5),
        ("3/4", 0.75),
        ("\\frac{3}{4}", 0.75),
        ("\\boxed{42}", 42),
        ("First 3, then 4, so 7", 7),
        ("step2 gives 9", 9),  # digits inside a word are not a number
        ("1,000,000", 1_000_000),
        ("7/0", None),
        ("no number here", None),
        ("", None),
    ],
)
def test_final_number_is_the_last_number_however_written(text: str, number: float | None) -> None:
    assert calc.final_number(text) == number


@pytest.mark.parametrize(
    ("text", "answer", "reward"),
    [
        ("The answer is 48.", 48, 1.0),
        ("The answer is 47.", 48, 0.0),
        ("= 53857", 53856, 0.0),  # a whole number must be exact, however large
        ("48.5", 48, 0.0),
        ("48.0", 48, 1.0),
        ("0.33333", 1 / 3, 1.0),  # other answers count within a relative 1e-4
        ("0.33", 1 / 3, 0.0),
        ("1/3", 1 / 3, 1.0),
        ("I don't know", 48, 0.0),
        ("48 is wrong, it is 49", 48, 0.0),
    ],
)
def test_reward_is_one_when_the_final_number_is_right(text: str, answer: float, reward: float) -> None:
    assert calc.reward(text, answer) == reward


# --- the agent through the gateway and the engine --------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Iterator[TransformersEngine]:
    with TransformersEngine(tiny_model, served_model_name="tiny") as engine:
        yield engine


def scripted_reply(prompt: str) -> str:
    """The scripted model: the solver "works" the question out; the answer node gives the right number when the
    question's first number is even, else one too many (and writes it in a lenient format)."""
    if "What is the final answer?" in prompt:
        (text,) = re.findall(r"Question: What is (.+?)\?", prompt)
        value = eval(text)
        return f"The final answer is {value:,}." if int(text.split()[0]) % 2 == 0 else f"= {value + 1}"
    (text,) = re.findall(r"What is (.+?)\?", prompt)
    return f"We compute {text} step by step."


@pytest.fixture
def store(tmp_path: Path) -> Iterator[agl.SqliteStore]:
    store = agl.SqliteStore(tmp_path / "runs.db")
    yield store
    asyncio.run(store.close())


def run_calc(
    upstream: str, store: agl.SqliteStore, tasks: list[agl.Task], **sampling: float
) -> list[tuple[agl.Rollout, float | None]]:
    with agl.Gateway(upstream, store) as gateway:
        trainer = agl.Trainer(store=store, initial_resources={"llm": gateway.llm("calc", temperature=0, **sampling)})
        return trainer.dev(calc.calc_agent, tasks).rollouts


def trajectory(store: agl.SqliteStore, rollout: agl.Rollout) -> agl.Trajectory:
    return agl.TraceToTrajectory().adapt(asyncio.run(store.query_spans(rollout.rollout_id, "latest")))


def test_each_rollout_makes_a_solver_call_then_an_answer_call_recorded_with_token_ids(
    engine: TransformersEngine, store: agl.SqliteStore
) -> None:
    tasks = dataset.make_tasks(3, 3, seed=0)
    with engine.serve(port=0) as server:
        rollouts = run_calc(server.url, store, tasks, max_tokens=MAX_TOKENS)
    assert [rollout.status for rollout, _ in rollouts] == [agl.RolloutStatus.SUCCEEDED] * len(tasks)
    for rollout, reward in rollouts:
        assert reward in (0.0, 1.0)
        calls = trajectory(store, rollout).transitions
        assert [call.agent_name for call in calls] == [calc.SOLVER, calc.ANSWER]
        assert all(call.has_token_ids and call.logprobs for call in calls)
        assert all(len(call.completion_token_ids or []) <= MAX_TOKENS for call in calls)  # the resource's cap
        solver, answer = calls
        assert solver.input_messages[-1] == {"role": "user", "content": rollout.input["question"]}
        # The answer node reads the solver's working: exactly the text the solver's tokens decode to.
        work = engine.tokenizer.decode(solver.completion_token_ids, skip_special_tokens=True)
        assert work.strip() in str(answer.input_messages[-1]["content"])
        assert solver.end_time is not None and solver.end_time <= answer.start_time
        assert_the_handler_recorded_the_graph(asyncio.run(store.query_spans(rollout.rollout_id)))


def assert_the_handler_recorded_the_graph(spans: list[agl.Span]) -> None:
    """The LangChain handler's spans: the graph, its two nodes, and each node's LLM call, the parent of the gateway's
    span of that call (joined through the traceparent the handler sends), both naming the node as the agent."""
    by_id = {span.span_id: span for span in spans}
    (graph,) = [span for span in spans if span.name == "calc"]
    nodes = sorted((span for span in spans if span.parent_id == graph.span_id), key=lambda span: span.start_time)
    assert [node.name for node in nodes] == [calc.SOLVER, calc.ANSWER]
    gateway_calls = [span for span in spans if span.attributes.get(semconv.AGL_LLM_GATEWAY)]
    assert len(gateway_calls) == 2
    for node, call in zip(nodes, gateway_calls, strict=True):
        recorded = by_id[str(call.parent_id)]  # the handler's span of the same call
        assert recorded.parent_id == node.span_id
        assert recorded.attributes[semconv.GEN_AI_RESPONSE_ID] == call.attributes[semconv.GEN_AI_RESPONSE_ID]
        assert recorded.attributes[semconv.GEN_AI_AGENT_NAME] == call.attributes[semconv.GEN_AI_AGENT_NAME] == node.name


def test_rewards_follow_the_answer_node_final_number(engine: TransformersEngine, store: agl.SqliteStore) -> None:
    tasks = dataset.make_tasks(8, 6, seed=5)
    expected = [1.0 if int(expression(t).split()[0]) % 2 == 0 else 0.0 for t in tasks]
    assert 0 < sum(expected) < len(tasks)  # both kinds are there
    with serve_scripted(scripted_reply, tokenizer=engine.tokenizer) as server:
        rollouts = run_calc(server.url, store, tasks)
    by_task = {str(rollout.metadata["task_id"]): reward for rollout, reward in rollouts}
    assert [by_task[t.id] for t in tasks] == expected
    rollout, _ = rollouts[0]
    (final,) = [s for s in asyncio.run(store.query_spans(rollout.rollout_id)) if s.name == semconv.SPAN_REWARD]
    assert trajectory(store, rollout).final_reward == by_task[str(rollout.metadata["task_id"])]
    assert final.attributes[semconv.AGL_REWARD_VALUE] == by_task[str(rollout.metadata["task_id"])]


def test_the_script_runs_the_agent_and_reports_the_success_rate(tiny_model: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE / "calc.py"),
            "--model",
            str(tiny_model),
            "--tasks",
            "3",
            "--db",
            "calc.db",
            "--max-tokens",
            str(MAX_TOKENS),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # a tiny model gains nothing from threads; a busy CPU loses
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "level 1 (2 operands, 1 digit, +), 3 tasks, seed 0, temperature 0.8, top_p 1" in out
    assert "3 rollouts (0 failed), 6 LLM calls (3 solver, 3 answer), 6 with token ids" in out
    assert re.search(r"success rate: \d/3 = ", out)
    assert f"The store is {tmp_path / 'calc.db'}" in out


def test_the_training_script_trains_validates_and_says_where_its_files_are(tiny_model: Path, tmp_path: Path) -> None:
    # The README's quick-start, shrunk: two iterations of two tasks on the tiny model.
    arguments = ["--model", str(tiny_model), "--iterations", "2", "--tasks-per-iteration", "2", "--group-size", "2"]
    arguments += ["--val-tasks", "3", "--validate-every", "1", "--max-tokens", str(MAX_TOKENS), "--out", "run"]
    result = subprocess.run(
        [sys.executable, str(EXAMPLE / "train.py"), *arguments],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    out, run = result.stdout, tmp_path / "run"
    assert re.search(r"validation accuracy before training: \d+\.\d% \(3 tasks\)", out)
    assert re.search(r"validation accuracy after 2 iterations: \d+\.\d% \([+-]\d+\.\d points\)", out)
    # A line per validation as it happens; the progress bar on stderr.
    assert "validation of the untrained model: success" in out
    assert "validation after iteration 1: success" in out
    assert re.search(r"LightningRL: 100%.* 2/2 .*reward=", result.stderr)
    for line, path in (
        ("plot:", run / "metrics" / "curve.png"),
        ("metrics:", run / "metrics" / "metrics.csv"),
        ("store:", run / "runs.db"),
        ("checkpoint:", run / "checkpoint" / "latest"),
    ):
        assert f"{line}" in out and str(path) in out
        assert path.exists(), path
    with (run / "metrics" / "metrics.csv").open() as f:
        assert [row["iteration"] for row in csv.DictReader(f)] == ["1", "2"]


def test_the_sft_script_fine_tunes_validates_and_exports(tiny_model: Path, tmp_path: Path) -> None:
    # examples/calc/sft.py, shrunk: one iteration of two tasks on the tiny model (which rarely answers right, so
    # it may select nothing: the report and the files are what is checked).
    arguments = ["--model", str(tiny_model), "--iterations", "1", "--tasks-per-iteration", "2"]
    arguments += ["--rollouts-per-task", "2", "--val-tasks", "2", "--max-tokens", str(MAX_TOKENS), "--out", "run"]
    result = subprocess.run(
        [sys.executable, str(EXAMPLE / "sft.py"), *arguments],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    out, run = result.stdout, tmp_path / "run"
    assert "1 iterations of 2 tasks x 2 rollouts, best correct one of each; 2 validation tasks" in out
    assert re.search(r"validation success \d+\.\d% -> \d+\.\d%, mean reward .* \(after 1 iterations, 2 tasks\)", out)
    for line, path in (
        ("selected:", run / "selected.jsonl"),
        ("metrics:", run / "metrics" / "metrics.csv"),
        ("store:", run / "runs.db"),
    ):
        assert f"{line}" in out and str(path) in out
        assert path.exists(), path
