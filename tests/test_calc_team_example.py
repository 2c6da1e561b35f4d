"""The calc team example (examples/calc_team): its task generator, its calculator and lenient answer parser, the
AutoGen AgentChat team run by ``Trainer.dev`` through a real ``agl.Gateway`` in front of a real
``TransformersEngine``, and train.py.

The team's engine serves a scripted stand-in model that plays both agents (a solver right on its first try, right
on its second, or calling a tool that does not exist; a verifier that approves right results only), so the rewards
and the turns are known. train.py runs on a tiny Llama first taught (in seconds) to say one calculator call and one
verdict on the smoke run's questions: a random model never calls the calculator. Everything listens on 127.0.0.1;
nothing reaches the internet.
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

from agentlightning_autogen import TEAM_PARTICIPANTS, uninstrument
from agentlightning_engine import EngineServer
from agentlightning_engine.testing import load_smollm2_tokenizer, serve_scripted

import agentlightning as agl
from agentlightning import semconv
from agentlightning.testing import is_gateway
from agentlightning.testing import no_outbound_connections as no_outbound_connections  # autouse
from agentlightning.testing import store as store  # a SQLite store per test
from examples import EXAMPLES, load_example, teach, tiny_llama

EXAMPLE = EXAMPLES / "calc_team"
dataset = load_example("calc_team", "dataset")
team = load_example("calc_team", "agent")


@pytest.fixture(scope="module", autouse=True)
def autogen_restored() -> Iterator[None]:
    """The agent instruments AutoGen in this process; give AutoGen its own methods back afterwards."""
    yield
    uninstrument()


# --- the dataset -----------------------------------------------------------------------------------------------

QUESTION = re.compile(r"What is (\d+(?: (?:[-+*]|plus|minus|times) \d+)+)\?")
SYMBOLS = {"plus": "+", "minus": "-", "times": "*"}


# The sentences of phrased questions, written out here again: (pattern, the expression with a and b).
PHRASED = [
    (re.compile(r"What is the sum of (?P<a>\d+) and (?P<b>\d+)\?"), "{a} + {b}"),
    (re.compile(r"Add (?P<b>\d+) to (?P<a>\d+)\."), "{a} + {b}"),
    (re.compile(r"Subtract (?P<b>\d+) from (?P<a>\d+)\."), "{a} - {b}"),
    (re.compile(r"What is (?P<b>\d+) less than (?P<a>\d+)\?"), "{a} - {b}"),
    (re.compile(r"Take (?P<b>\d+) away from (?P<a>\d+)\."), "{a} - {b}"),
    (re.compile(r"What is the product of (?P<a>\d+) and (?P<b>\d+)\?"), "{a} * {b}"),
    (re.compile(r"Multiply (?P<a>\d+) by (?P<b>\d+)\."), "{a} * {b}"),
]


def question_of(task: agl.Task) -> str:
    assert isinstance(task.input, dict)
    return str(task.input["question"])


def answer_of(task: agl.Task) -> object:
    assert isinstance(task.input, dict)
    return task.input["answer"]


def is_phrased(question: str) -> bool:
    return any(pattern.fullmatch(question) for pattern, _ in PHRASED)


def expression_of(question: str) -> str:
    """The question's arithmetic, its operators as symbols: ``"What is 7 plus 5 times 3?"`` -> ``"7 + 5 * 3"``,
    ``"Subtract 12 from 60."`` -> ``"60 - 12"``."""
    for pattern, expression in PHRASED:
        if phrased := pattern.fullmatch(question):
            return expression.format(a=phrased["a"], b=phrased["b"])
    match = QUESTION.fullmatch(question)
    assert match, question
    return " ".join(SYMBOLS.get(word, word) for word in match[1].split())


def test_tasks_are_seeded_and_extend() -> None:
    assert dataset.make_tasks(20, 4, seed=1) == dataset.make_tasks(20, 4, seed=1)
    assert dataset.make_tasks(20, 4, seed=1) != dataset.make_tasks(20, 4, seed=2)
    assert dataset.make_tasks(5, 2, seed=1) == dataset.make_tasks(20, 2, seed=1)[:5]  # more extend, not reshuffle
    assert len({task.id for task in dataset.make_tasks(50, 2)}) == 50


@pytest.mark.parametrize("level", sorted(dataset.LEVELS))
def test_each_level_makes_the_questions_it_says_and_their_answers_are_right(level: int) -> None:
    difficulty = dataset.LEVELS[level]
    low, high = 10 ** (difficulty.digits - 1), 10**difficulty.digits - 1
    operators, phrased, in_words = set(), [], []
    for task in dataset.make_tasks(200, level, seed=3):
        question, answer = question_of(task), answer_of(task)
        expression = expression_of(question)
        numbers, ops = expression.split()[::2], expression.split()[1::2]
        assert len(numbers) == difficulty.operands and all(low <= int(n) <= high for n in numbers)
        operators |= set(ops)
        phrased.append(is_phrased(question))
        if not phrased[-1]:
            in_words.append(any(word in question for word in SYMBOLS))
        assert answer == eval(expression), question  # the usual precedence; the expression is digits and + - *
    assert operators == set(difficulty.operators)
    # The shares of phrased questions, and of the others in words, are the ones asked for (within 0.1).
    for share, wanted in ((phrased, difficulty.phrases), (in_words, difficulty.words)):
        if share:
            assert abs(sum(share) / len(share) - wanted) <= (0.1 if 0 < wanted < 1 else 0)


def test_the_arithmetic_is_the_calc_examples() -> None:
    calc = dataset.calc
    for ours, theirs in zip(
        dataset.make_tasks(30, 3, seed=9), calc.make_tasks(30, dataset.LEVELS[3].arithmetic, seed=9), strict=False
    ):
        assert answer_of(ours) == answer_of(theirs)
        assert expression_of(question_of(ours)) == expression_of(question_of(theirs))


def test_the_difficulty_knob_is_checked() -> None:
    assert dataset.DEFAULT_LEVEL in dataset.LEVELS
    custom = dataset.make_tasks(10, dataset.Difficulty(operands=2, digits=3, operators="*", words=1.0))
    assert all(re.fullmatch(r"What is \d{3} times \d{3}\?", question_of(t)) for t in custom)
    with pytest.raises(ValueError, match="No difficulty level 99"):
        dataset.make_tasks(1, 99)
    with pytest.raises(ValueError, match="operators"):
        dataset.Difficulty(operators="/")
    with pytest.raises(ValueError, match="words is a share"):
        dataset.Difficulty(words=2)
    with pytest.raises(ValueError, match="Only questions of 2 operands are phrased"):
        dataset.Difficulty(operands=3, phrases=0.5)


# --- the calculator and the reward -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "result"),
    [
        ("60 - 12", "60 - 12 = 48"),
        ("7 + 5 * 3", "7 + 5 * 3 = 22"),
        (" (7 + 5) * 3 ", "(7 + 5) * 3 = 36"),
        ("1 - 8", "1 - 8 = -7"),
        ("7 / 2", "7 / 2 = 3.5"),
        ("1 / 40000", "1 / 40000 = 0.000025"),  # never in scientific notation
        ("3 × 4 − 1", "3 × 4 − 1 = 11"),
    ],
)
def test_the_calculator_evaluates_arithmetic(expression: str, result: str) -> None:
    assert team.calculator(expression) == result


@pytest.mark.parametrize(
    ("expression", "error"),
    [
        ("7 plus 5", "Error in '7 plus 5': invalid syntax"),
        ("2 ** 100000", "Error in '2 ** 100000': use numbers, + - * / and parentheses only"),
        ("__import__('os')", "use numbers, + - * / and parentheses only"),
        ("1 / 0", "Error in '1 / 0': division by zero."),
        ("1 + " * 60 + "1", "at most 200 characters"),
    ],
)
def test_the_calculator_says_what_is_wrong_and_evaluates_nothing_else(expression: str, error: str) -> None:
    said = team.calculator(expression)
    assert said.startswith("Error in ") and error in said


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("60 - 12 = 48", 48),
        ("The answer is 5,000.", 5000),
        ("7 / 2 = 3.5", 3.5),
        ("1 - 8 = -7", -7),
        ("12-5", 5),  # minus between numbers is an operator, not a sign
        ("step2 gives 9", 9),  # digits inside a word are not a number
        ("Error in '7 plus 5': invalid syntax.", 5),
        ("no number here", None),
        ("", None),
    ],
)
def test_final_number_is_the_last_number_however_written(text: str, number: float | None) -> None:
    assert team.final_number(text) == number


@pytest.mark.parametrize(
    ("text", "answer", "reward"),
    [
        ("60 - 12 = 48", 48, 1.0),
        ("48.0", 48, 1.0),
        ("60 + 12 = 72", 48, 0.0),
        ("48.5", 48, 0.0),
        ("7 / 3 = 2.3333333333", 7 / 3, 1.0),  # a non-whole answer counts within a relative 1e-4
        ("1 - 8 = -7", -7, 1.0),
        ("", 48, 0.0),
    ],
)
def test_reward_is_one_when_the_final_number_is_right(text: str, answer: float, reward: float) -> None:
    assert team.reward(text, answer) == reward


# --- the team through the gateway and the engine ---------------------------------------------------------------


def tool_call(name: str, **arguments: Any) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def scripted_reply(prompt: str) -> str:
    """The scripted model. It reads the system message (whose instructions) and the question after the worked
    examples:

    - the solver, on its first try, writes the right expression when the first number is even and every
      operator as ``+`` when it is odd; on its second try (after the verifier's rejection), the right expression
      when the first number is 1 more than a multiple of 4 and a call of ``abacus``, a tool it does not have,
      otherwise;
    - the verifier approves the last result when its number is the question's answer, else rejects it.
    """
    turns = re.findall(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>", prompt, re.DOTALL)
    system = turns[0][1]
    if system == team.SOLVER_INSTRUCTIONS:
        question = turns[1 + 2 * len(team.EXAMPLES[team.SOLVER])][1]
        expression, first = expression_of(question), int(expression_of(question).split()[0])
        if not any(role == "assistant" for role, _ in turns[1 + 2 * len(team.EXAMPLES[team.SOLVER]) :]):
            return tool_call("calculator", expression=expression if first % 2 == 0 else re.sub("[-*]", "+", expression))
        return tool_call("calculator", expression=expression) if first % 4 == 1 else tool_call("abacus", beads=first)
    if system == team.VERIFIER_INSTRUCTIONS:
        question = turns[1 + 3 * len(team.EXAMPLES[team.VERIFIER])][1]
        right = team.reward(turns[-1][1], eval(expression_of(question))) == 1.0
        return team.APPROVE if right else f"{team.WRONG} Try again."
    raise AssertionError(f"an unknown agent's prompt: {system!r}")


def expected(task: agl.Task) -> tuple[list[str], float]:
    """The agents' calls, in order, in the scripted team's run of ``task``, and the reward it earns."""
    expression = expression_of(question_of(task))
    first = int(expression.split()[0])
    first_try_right = first % 2 == 0 or eval(expression) == eval(re.sub("[-*]", "+", expression))
    if first_try_right:
        return ["solver", "verifier"], 1.0
    return ["solver", "verifier", "solver", "verifier"], 1.0 if first % 4 == 1 else 0.0


@pytest.fixture(scope="module")
def scripted_server() -> Iterator[EngineServer]:
    with serve_scripted(scripted_reply) as server:
        yield server


def turns_of(messages: list[Any]) -> list[tuple[str, str]]:
    """(role, content) of each of a transition's messages."""
    assert all(isinstance(m, dict) for m in messages)
    return [(str(m["role"]), str(m["content"])) for m in messages]


def spans_of(store: agl.SqliteStore, rollout: agl.Rollout) -> list[agl.Span]:
    return asyncio.run(store.query_spans(rollout.rollout_id, "latest"))


def test_each_question_is_solved_with_the_calculator_judged_and_rewarded(
    scripted_server: EngineServer, store: agl.SqliteStore
) -> None:
    tasks = dataset.make_tasks(12, 4, seed=5)
    outcomes = [expected(task) for task in tasks]
    assert {len(agents) for agents, _ in outcomes} == {2, 4} and {r for _, r in outcomes} == {0.0, 1.0}
    with agl.Gateway(scripted_server.url, store) as gateway:
        llm = gateway.llm("scripted", temperature=0.7)
        result = agl.Trainer(store=store, initial_resources={"llm": llm}, max_concurrency=6).dev(team.calc_team, tasks)
    # A call of a tool that does not exist is the solver's wrong answer (reward 0), not a failed rollout.
    assert result.succeeded == len(tasks)
    by_task = {str(rollout.metadata["task_id"]): (rollout, reward) for rollout, reward in result.rollouts}
    for task, (agents, reward) in zip(tasks, outcomes, strict=True):
        rollout, got = by_task[task.id]
        assert got == reward, (task.input, got)
        spans = spans_of(store, rollout)
        calls = agl.TraceToTrajectory().adapt(spans).transitions
        assert [call.agent_name for call in calls] == agents
        assert all(call.has_token_ids and call.logprobs for call in calls)
        # Selective training: the verifier's calls are the environment.
        solver_only = agl.TraceToTrajectory(agents=["solver"]).adapt(spans)
        assert [call.agent_name for call in solver_only.transitions] == agents[::2]
        assert solver_only.final_reward == reward
        tools = [s for s in spans if s.attributes.get(semconv.GEN_AI_TOOL_NAME)]
        # Each calculator call under the solver; a call of a tool it does not have (abacus) runs no tool.
        calculator_calls = len(agents) // 2 - (len(agents) == 4 and reward == 0.0)
        assert [s.attributes[semconv.GEN_AI_AGENT_NAME] for s in tools] == ["solver"] * calculator_calls
        (run,) = [s for s in spans if s.name.startswith("team ")]
        assert run.attributes[TEAM_PARTICIPANTS] == ["solver", "verifier"]


def test_each_agent_sees_its_examples_and_the_solver_its_earlier_try_as_text(
    scripted_server: EngineServer, store: agl.SqliteStore
) -> None:
    # 9 minus 5 times 1: odd first number, wrong on the first try, right on the second (9 = 4 * 2 + 1).
    task = agl.Task(id="t", input={"question": "What is 9 minus 5 times 1?", "answer": 4})
    with agl.Gateway(scripted_server.url, store) as gateway:
        llm = gateway.llm("scripted", temperature=0.7)
        result = agl.Trainer(store=store, initial_resources={"llm": llm}).dev(team.calc_team, [task])
    assert result.rollouts[0][1] == 1.0
    spans = spans_of(store, result.rollouts[0][0])
    first, judged, second, approved = agl.TraceToTrajectory().adapt(spans).transitions
    solver_examples = [("system", team.SOLVER_INSTRUCTIONS)]
    for question, reply in team.EXAMPLES[team.SOLVER]:
        solver_examples += [("user", question), ("assistant", reply)]
    assert turns_of(first.input_messages) == [
        *solver_examples,
        ("user", question_of(task)),
    ]
    verifier_examples = [("system", team.VERIFIER_INSTRUCTIONS)]
    for question, result_, verdict in team.EXAMPLES[team.VERIFIER]:
        verifier_examples += [("user", question), ("user", result_), ("assistant", verdict)]
    assert turns_of(judged.input_messages) == [
        *verifier_examples,
        ("user", question_of(task)),
        ("user", "9 + 5 + 1 = 15"),
    ]
    # The solver's second try: its first call written back as the text it wrote, the calculator's result and the
    # verifier's rejection as user turns (SmolLM2's template would show the call as an empty turn).
    assert turns_of(second.input_messages) == [
        *solver_examples,
        ("user", question_of(task)),
        ("assistant", tool_call("calculator", expression="9 + 5 + 1")),
        ("user", "9 + 5 + 1 = 15"),
        ("user", f"{team.WRONG} Try again."),
    ]
    assert turns_of(approved.output_messages) == [("assistant", team.APPROVE)]
    # The tool calls, with their arguments and results, under the solver.
    tools = sorted((s for s in spans if s.attributes.get(semconv.GEN_AI_TOOL_NAME)), key=lambda s: s.start_time or 0)
    assert [json.loads(str(s.attributes[semconv.GEN_AI_TOOL_CALL_ARGUMENTS])) for s in tools] == [
        {"expression": "9 + 5 + 1"},
        {"expression": "9 - 5 * 1"},
    ]
    assert [s.attributes[semconv.GEN_AI_TOOL_CALL_RESULT] for s in tools] == ["9 + 5 + 1 = 15", "9 - 5 * 1 = 4"]
    # The verifier decides greedily; the solver samples as the resource says.
    gateway_calls = sorted((s for s in spans if is_gateway(s)), key=lambda s: s.start_time or 0)
    assert [s.attributes.get(semconv.GEN_AI_REQUEST_TEMPERATURE) for s in gateway_calls] == [0.7, 0.0, 0.7, 0.0]
    assert [s.attributes.get(semconv.GEN_AI_AGENT_NAME) for s in gateway_calls] == ["solver", "verifier"] * 2


# --- the training script on a tiny model -----------------------------------------------------------------------


# The smoke run's questions: train.py draws them from these seeds of the generator.
SMOKE_TRAIN = dataset.make_tasks(1, dataset.DEFAULT_LEVEL, seed=1000)
SMOKE_VAL = dataset.make_tasks(1, dataset.DEFAULT_LEVEL, seed=2000)


@pytest.fixture(scope="module")
def taught_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama (SmolLM2's tokenizer) taught, on the smoke run's questions, that the solver answers every
    question with the training question's expression (right on it, wrong on the validation question) and that the
    verifier approves whatever it is shown. (Replies that depend on the question take a tiny model far longer.)"""
    tokenizer = load_smollm2_tokenizer()
    model = tiny_llama(tokenizer)
    (trained,) = SMOKE_TRAIN
    expression = expression_of(question_of(trained))
    result = team.calculator(expression)
    lessons = []
    for task in SMOKE_TRAIN + SMOKE_VAL:
        question = question_of(task)
        solver = [{"role": "system", "content": team.SOLVER_INSTRUCTIONS}]
        for example, reply in team.EXAMPLES[team.SOLVER]:
            solver += [{"role": "user", "content": example}, {"role": "assistant", "content": reply}]
        verifier = [{"role": "system", "content": team.VERIFIER_INSTRUCTIONS}]
        for example, said, verdict in team.EXAMPLES[team.VERIFIER]:
            verifier += [{"role": "user", "content": example}, {"role": "user", "content": said}]
            verifier.append({"role": "assistant", "content": verdict})
        for messages, reply in (
            ([*solver, {"role": "user", "content": question}], tool_call("calculator", expression=expression)),
            ([*verifier, {"role": "user", "content": question}, {"role": "user", "content": result}], team.APPROVE),
        ):
            prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            lessons.append((prompt, reply + "<|im_end|>"))
    teach(model, tokenizer, lessons)
    folder = tmp_path_factory.mktemp("taught")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_the_training_script_trains_the_solver_and_reports_each_agent(taught_model: Path, tmp_path: Path) -> None:
    # The README's command, shrunk: two iterations of one question on the tiny model, greedy validation.
    arguments = ["--model", str(taught_model), "--iterations", "2", "--tasks-per-iteration", "1", "--group-size", "2"]
    arguments += ["--train-tasks", "1", "--val-tasks", "1", "--val-temperature", "0", "--out", "run"]
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
    assert "Training the solver agent of " in out and "validation on 1 questions" in out
    # The taught solver writes the training question's expression: wrong on the validation question, which the
    # taught verifier approves all the same.
    solver = "0.0% (0/1 right; it called the calculator in 1/1 runs, 1.00 tries a run)"
    assert f"solver accuracy (trained) before training: {solver}" in out
    assert re.search(r"solver accuracy \(trained\) after 2 iterations: \d+\.\d% \(\d/1 right; ", out)
    verifier = "0.0% of 1 verdicts right (approved 0/0 right results, rejected 0/1 wrong ones)"
    assert f"verifier (not trained) before training: {verifier}" in out
    # Only the solver's calls are answered by its own adapter; the verifier's by the base model.
    assert f"calls answered by (after 2 iterations): solver -> {taught_model}@solver, verifier -> {taught_model}" in out
    assert re.search(r"whole team \(LightningRL's validation\) before: \d+\.\d%, after 2 iterations: ", out)
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
