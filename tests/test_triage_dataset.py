"""The triage example's task generator (examples/triage/dataset.py), its ``convert`` tool, and its lenient answer
parser and reward (agent.py), on tables of cases; every answer checked against a units table of the test's own."""

from __future__ import annotations

import os
import re
from fractions import Fraction

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from examples import load_example

dataset = load_example("triage", "dataset")
triage = load_example("triage", "agent")

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
