"""The triage example (examples/triage): its task generator, its lenient answer parser, the OpenAI Agents SDK agent
run by ``Trainer.dev`` through a real ``agl.Gateway`` in front of a real ``TransformersEngine``, and train.py.

The agent's engine serves a scripted stand-in model that plays the three agents (hand-offs, right and wrong tool
calls, a call of a tool that does not exist, a triage that answers itself), so the rewards and the routes are
known. train.py runs on a tiny Llama first taught (in under a minute) to say one hand-off and one tool call on the
smoke run's questions: a random model never hands off, and a run with no call of the trained agent cannot train.
Everything listens on 127.0.0.1; nothing reaches the internet.
"""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from agentlightning_engine import EngineServer, TransformersEngine
from agentlightning_engine.testing import ScriptedModel, load_smollm2_tokenizer
from agentlightning_openai_agents import HANDOFF_FROM, HANDOFF_TO, uninstrument
from transformers import LlamaConfig, LlamaForCausalLM

import agentlightning as agl
from agentlightning import semconv

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "triage"


def load(name: str) -> ModuleType:
    """An example module, imported from its file under a name of its own (examples are not packages)."""
    spec = importlib.util.spec_from_file_location(f"triage_example_{name}", EXAMPLE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


dataset = load("dataset")
triage = load("agent")


@pytest.fixture(scope="module", autouse=True)
def sdk_tracing_restored() -> Iterator[None]:
    """The agent instruments the Agents SDK in this process; give the SDK its own processors back afterwards."""
    yield
    uninstrument()


@pytest.fixture(autouse=True)
def no_outbound_connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test if anything in this process tries to connect anywhere but this machine."""
    attempts: list[Any] = []
    connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "localhost", "::1") and self.family != socket.AF_UNIX:
            attempts.append(address)
            raise ConnectionRefusedError(f"test guard: no connections off this machine ({address})")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield
    assert not attempts, f"tried to reach another machine: {attempts}"


# --- the dataset -----------------------------------------------------------------------------------------------

# The units, written out here again so the generator's answers are checked against a table of its own.
SIZES = {
    "km": Fraction(1000),
    "m": Fraction(1),
    "cm": Fraction(1, 100),
    "mm": Fraction(1, 1000),
    "kg": Fraction(1000),
    "g": Fraction(1),
    "h": Fraction(3600),
    "min": Fraction(60),
    "s": Fraction(1),
    "l": Fraction(1000),
    "ml": Fraction(1),
}
QUANTITY = {"km": "L", "m": "L", "cm": "L", "mm": "L", "kg": "M", "g": "M", "h": "T", "min": "T", "s": "T"}
QUANTITY |= {"l": "V", "ml": "V"}
NAMES = {
    "kilometre": "km",
    "metre": "m",
    "centimetre": "cm",
    "millimetre": "mm",
    "kilogram": "kg",
    "gram": "g",
    "hour": "h",
    "minute": "min",
    "second": "s",
    "litre": "l",
    "millilitre": "ml",
}
NAMES |= {f"{name}s": symbol for name, symbol in NAMES.items()}

MATH_QUESTION = re.compile(r"(?:What is|Compute|How much is) (\d+) (plus|times) (\d+)[?.]")
UNITS_QUESTIONS = (
    re.compile(r"Convert (?P<value>\d+) (?P<source>\w+) to (?P<target>\w+)\."),
    re.compile(r"How many (?P<target>\w+) are in (?P<value>\d+) (?P<source>\w+)\?"),
    re.compile(r"What is (?P<value>\d+) (?P<source>\w+) in (?P<target>\w+)\?"),
)


def parse_units(question: str) -> tuple[int, str, str, bool]:
    """(value, source symbol, target symbol, whether the units were written out)."""
    for pattern in UNITS_QUESTIONS:
        if match := pattern.fullmatch(question):
            source, target = match["source"], match["target"]
            named = source in NAMES and target in NAMES
            if named:
                source, target = NAMES[source], NAMES[target]
            assert source in SIZES and target in SIZES, question
            return int(match["value"]), source, target, named
    raise AssertionError(f"not a units question: {question!r}")


def test_tasks_are_seeded_and_alternate_kinds() -> None:
    assert dataset.make_tasks(20, 4, seed=1) == dataset.make_tasks(20, 4, seed=1)
    assert dataset.make_tasks(20, 4, seed=1) != dataset.make_tasks(20, 4, seed=2)
    assert dataset.make_tasks(5, 4, seed=1) == dataset.make_tasks(20, 4, seed=1)[:5]  # more tasks extend, not reshuffle
    tasks = dataset.make_tasks(50, 2)
    assert len({task.id for task in tasks}) == 50
    assert [task.input["specialist"] for task in tasks[:4]] == ["math", "units", "math", "units"]
    # A kind asked for alone gives the very tasks that kind has in a mix.
    units = dataset.make_tasks(10, 3, seed=4, kinds=["units"])
    assert units == [t for t in dataset.make_tasks(20, 3, seed=4) if t.input["specialist"] == "units"]


@pytest.mark.parametrize("level", sorted(dataset.LEVELS))
def test_each_level_makes_the_questions_it_says_and_their_answers_are_right(level: int) -> None:
    difficulty = dataset.LEVELS[level]
    low, high = 10 ** (difficulty.digits - 1), 10**difficulty.digits - 1
    operators, named, downward = set(), [], False
    for task in dataset.make_tasks(200, level, seed=3):
        question, answer = str(task.input["question"]), task.input["answer"]
        if task.input["specialist"] == "math":
            match = MATH_QUESTION.fullmatch(question)
            assert match, question
            a, word, b = int(match[1]), match[2], int(match[3])
            assert low <= a <= high and low <= b <= high
            operators.add(word)
            assert answer == (a + b if word == "plus" else a * b)
        else:
            value, source, target, written_out = parse_units(question)
            assert low <= value <= high and QUANTITY[source] == QUANTITY[target] and source != target
            named.append(written_out)
            downward |= SIZES[source] < SIZES[target]
            assert answer == float(value * SIZES[source] / SIZES[target]), question  # the nearest float
    assert operators == {{"+": "plus", "*": "times"}[op] for op in difficulty.math_operators}
    # The share of questions with the units written out is the one asked for (100 questions: within 0.15).
    assert abs(sum(named) / len(named) - difficulty.unit_names) <= (0.15 if 0 < difficulty.unit_names < 1 else 0)
    assert downward == difficulty.downward


def test_the_difficulty_knob_is_checked() -> None:
    assert dataset.DEFAULT_LEVEL in dataset.LEVELS
    custom = dataset.make_tasks(10, dataset.Difficulty(digits=3, math_operators="*"), kinds=["math"])
    assert all(re.fullmatch(r"\D+\d{3} times \d{3}\D", str(t.input["question"])) for t in custom)
    with pytest.raises(ValueError, match="No difficulty level 99"):
        dataset.make_tasks(1, 99)
    with pytest.raises(ValueError, match="math_operators"):
        dataset.Difficulty(math_operators="-")
    with pytest.raises(ValueError, match="kinds"):
        dataset.make_tasks(1, kinds=["chemistry"])


@pytest.mark.parametrize(
    ("value", "source", "target", "result"),
    [
        (3, "km", "m", 3000),
        (250, "g", "kg", 0.25),
        (2, "kilometres", "metres", 2000),
        (1, "Hour", "minutes", 60),
        (90, "min", "h", 1.5),
        (7, "l", "ml", 7000),
        (1.5, "km", "m", 1500),
    ],
)
def test_convert_knows_symbols_and_names(value: float, source: str, target: str, result: float) -> None:
    assert dataset.convert(value, source, target) == result


def test_convert_says_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="Unknown unit 'parsec'; use one of km, m"):
        dataset.convert(1, "parsec", "m")
    with pytest.raises(ValueError, match=r"Cannot convert mass \(kg\) to length \(m\)"):
        dataset.convert(1, "kg", "m")


# --- the reward: lenient parsing of the final number -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("5000 m", 5000),
        ("The answer is 5,000.", 5000),
        ("0.25 kg", 0.25),
        ("3 km = 3000 m", 3000),
        ("x = -7", -7),
        ("12-5", 5),  # minus between numbers is an operator, not a sign
        ("step2 gives 9", 9),  # digits inside a word are not a number
        ("1,000,000 mm", 1_000_000),
        ("no number here", None),
        ("", None),
    ],
)
def test_final_number_is_the_last_number_however_written(text: str, number: float | None) -> None:
    assert triage.final_number(text) == number


@pytest.mark.parametrize(
    ("text", "answer", "reward"),
    [
        ("5000 m", 5000, 1.0),
        ("5,000", 5000, 1.0),
        ("4999 m", 5000, 0.0),
        ("5000.5", 5000, 0.0),
        ("0.11666667 h", 7 / 60, 1.0),  # a non-whole answer counts within a relative 1e-4
        ("0.12 h", 7 / 60, 0.0),
        ("Unknown unit 'x'", 5000, 0.0),
    ],
)
def test_reward_is_one_when_the_final_number_is_right(text: str, answer: float, reward: float) -> None:
    assert triage.reward(text, answer) == reward


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
    tokenizer = load_smollm2_tokenizer()
    model = ScriptedModel(tokenizer, scripted_reply)
    with (
        TransformersEngine(model, tokenizer=tokenizer, served_model_name="scripted") as engine,
        engine.serve(port=0) as server,
    ):
        yield server


@pytest.fixture
def store(tmp_path: Path) -> Iterator[agl.SqliteStore]:
    store = agl.SqliteStore(tmp_path / "runs.db")
    yield store
    asyncio.run(store.close())


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


def tiny_llama(tokenizer: Any) -> LlamaForCausalLM:
    """A 2-layer Llama (hidden size 64) with SmolLM2's vocabulary and a small init, which learns a reply in a few
    dozen steps (``make_tiny_model``'s large init, made for varied random text, takes several times longer)."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=0.02,
    )
    return LlamaForCausalLM(config)


def teach(model: LlamaForCausalLM, tokenizer: Any, lessons: list[tuple[str, str]], max_loss: float = 0.5) -> None:
    """Train ``model`` until it says each lesson's reply after its prompt, greedily: no reply token's loss above
    ``max_loss``. Sampled, it still strays now and then, which gives a training step rewards that differ."""
    rows = [
        (
            tokenizer(prompt, add_special_tokens=False)["input_ids"],
            tokenizer(reply, add_special_tokens=False)["input_ids"],
        )
        for prompt, reply in lessons
    ]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(300):
        optimizer.zero_grad()
        worst = 0.0
        for prompt, reply in rows:
            # Only the reply's positions go through the output layer: 49,152 logits per prompt token would be slow.
            logits = model(input_ids=torch.tensor([prompt + reply]), logits_to_keep=len(reply) + 1).logits[0, :-1]
            losses = torch.nn.functional.cross_entropy(logits, torch.tensor(reply), reduction="none")
            (losses.mean() / len(rows)).backward()
            worst = max(worst, losses.max().item())
        if worst < max_loss:
            break
        optimizer.step()
    else:
        raise AssertionError(f"the tiny model did not learn its replies (worst token loss {worst:.2f})")
    model.eval()


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
