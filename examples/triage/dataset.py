"""A seeded generator of triage tasks, arithmetic and unit conversions, with a difficulty knob.

    from dataset import LEVELS, Difficulty, make_tasks

    tasks = make_tasks(100, difficulty=1, seed=0)              # half math, half units, interleaved
    tasks[0].input  # {"question": "What is 4 plus 7?", "answer": 11, "specialist": "math"}
    tasks[1].input  # {"question": "Convert 6 km to m.", "answer": 6000, "specialist": "units"}
    tasks = make_tasks(50, difficulty=4, seed=0, kinds=["units"])  # units questions only

A task is an ``agl.Task`` whose input is ``{"question": str, "answer": int | float, "specialist": str}``:
``specialist`` names the agent the question belongs to, ``math`` or ``units`` (the triage agent must hand off
there; :func:`make_tasks` alternates the kinds it is given). A math question adds or multiplies two whole numbers
of ``digits`` digits. A units question converts a whole number of ``digits`` digits between two units of one
quantity (length, mass, time, volume): ``"Convert 3 km to m."`` with symbols, the units written out in a share
``unit_names`` of them (``"How many metres are in 3 kilometres?"``), and half of them from the smaller unit to the
larger when ``downward`` (an answer with decimals, ``"Convert 250 g to kg."`` -> 0.25). The same arguments give the
same tasks; more tasks extend the list rather than reshuffle it, and a kind asked for alone gives the questions it
has in a mix.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction

import agentlightning as agl

__all__ = [
    "DEFAULT_LEVEL",
    "KINDS",
    "LEVELS",
    "UNITS",
    "Difficulty",
    "Unit",
    "convert",
    "make_tasks",
]

KINDS = ("math", "units")


@dataclass(frozen=True)
class Unit:
    """A unit: its symbol, its names (singular, plural, other spellings), its quantity and its size in the
    quantity's base unit (an exact fraction, so conversions have exact answers)."""

    symbol: str
    names: tuple[str, ...]
    quantity: str
    size: Fraction


UNITS: dict[str, Unit] = {
    unit.symbol: unit
    for unit in (
        Unit("km", ("kilometre", "kilometres", "kilometer", "kilometers"), "length", Fraction(1000)),
        Unit("m", ("metre", "metres", "meter", "meters"), "length", Fraction(1)),
        Unit("cm", ("centimetre", "centimetres", "centimeter", "centimeters"), "length", Fraction(1, 100)),
        Unit("mm", ("millimetre", "millimetres", "millimeter", "millimeters"), "length", Fraction(1, 1000)),
        Unit("kg", ("kilogram", "kilograms"), "mass", Fraction(1000)),
        Unit("g", ("gram", "grams"), "mass", Fraction(1)),
        Unit("h", ("hour", "hours"), "time", Fraction(3600)),
        Unit("min", ("minute", "minutes"), "time", Fraction(60)),
        Unit("s", ("second", "seconds"), "time", Fraction(1)),
        Unit("l", ("litre", "litres", "liter", "liters"), "volume", Fraction(1000)),
        Unit("ml", ("millilitre", "millilitres", "milliliter", "milliliters"), "volume", Fraction(1)),
    )
}

# Every pair of units of one quantity, the larger first: "km -> m" is a downward conversion's reverse.
_PAIRS = [
    (big, small)
    for big in UNITS.values()
    for small in UNITS.values()
    if big.quantity == small.quantity and big.size > small.size
]


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """``value`` in ``from_unit`` expressed in ``to_unit``; each unit is a symbol or a name of :data:`UNITS`
    (any case). Raises ``ValueError`` for an unknown unit or units of two quantities."""
    source, target = _unit(from_unit), _unit(to_unit)
    if source.quantity != target.quantity:
        raise ValueError(f"Cannot convert {source.quantity} ({source.symbol}) to {target.quantity} ({target.symbol}).")
    exact = Fraction(str(value)) * source.size / target.size
    return int(exact) if exact.denominator == 1 else float(exact)


def _unit(text: str) -> Unit:
    wanted = text.strip().lower().rstrip(".")
    for unit in UNITS.values():
        if wanted == unit.symbol or wanted in unit.names:
            return unit
    known = ", ".join(UNITS)
    raise ValueError(f"Unknown unit {text!r}; use one of {known} (or their names, e.g. 'kilometres').")


@dataclass(frozen=True)
class Difficulty:
    """What makes a task hard: how long the numbers are, how the units are written, which way they convert.

    Attributes:
        digits: digits of every number in a question (1: 1-9, 2: 10-99).
        math_operators: the operations math questions use, a subset of ``"+*"``.
        unit_names: the share of units questions that write the units out ("How many metres are in 3
            kilometres?"); the others use symbols ("Convert 3 km to m.").
        downward: half the units questions convert to the larger unit ("250 g to kg"), whose answers have
            decimals; otherwise all convert to the smaller one.
    """

    digits: int = 1
    math_operators: str = "+"
    unit_names: float = 0.0
    downward: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.digits <= 4:
            raise ValueError(f"digits must be between 1 and 4, not {self.digits}.")
        if not 0 <= self.unit_names <= 1:
            raise ValueError(f"unit_names is a share of the questions, between 0 and 1, not {self.unit_names}.")
        if not self.math_operators or set(self.math_operators) - set("+*"):
            raise ValueError(f"math_operators must be a non-empty subset of '+*', not {self.math_operators!r}.")

    def __str__(self) -> str:
        units = {0.0: "symbols", 1.0: "names"}.get(self.unit_names, f"names {self.unit_names:.0%} of the time")
        direction = "both ways" if self.downward else "to the smaller unit"
        digits = f"{self.digits} digit{'s' if self.digits > 1 else ''}"
        return f"{digits}, math {self.math_operators}, units as {units}, {direction}"


#: Named settings, roughly easiest to hardest for a small model (README.md has the measured rates).
LEVELS: dict[int, Difficulty] = {
    1: Difficulty(digits=1, math_operators="+", unit_names=0.0, downward=False),
    2: Difficulty(digits=1, math_operators="+*", unit_names=0.5, downward=False),
    3: Difficulty(digits=2, math_operators="+*", unit_names=0.5, downward=False),
    4: Difficulty(digits=2, math_operators="+*", unit_names=0.5, downward=True),
    5: Difficulty(digits=2, math_operators="+*", unit_names=1.0, downward=True),
}

#: The level where the untrained SmolLM2-135M-Instruct's units specialist is right 10-50% of the time (README.md).
DEFAULT_LEVEL = 4

_MATH_WORDS = {"+": "plus", "*": "times"}


def _math_question(rng: random.Random, difficulty: Difficulty) -> tuple[str, int]:
    low, high = 10 ** (difficulty.digits - 1), 10**difficulty.digits - 1
    a, b = rng.randint(low, high), rng.randint(low, high)
    op = rng.choice(difficulty.math_operators)
    question = rng.choice(["What is {a} {word} {b}?", "Compute {a} {word} {b}.", "How much is {a} {word} {b}?"])
    return question.format(a=a, b=b, word=_MATH_WORDS[op]), a + b if op == "+" else a * b


def _units_question(rng: random.Random, difficulty: Difficulty) -> tuple[str, int | float]:
    low, high = 10 ** (difficulty.digits - 1), 10**difficulty.digits - 1
    value = rng.randint(low, high)
    big, small = rng.choice(_PAIRS)
    source, target = (small, big) if difficulty.downward and rng.random() < 0.5 else (big, small)
    if rng.random() < difficulty.unit_names:
        source_name = source.names[0] if value == 1 else source.names[1]
        target_name = target.names[1]
        phrasing = rng.choice(["How many {target} are in {value} {source}?", "What is {value} {source} in {target}?"])
        question = phrasing.format(value=value, source=source_name, target=target_name)
    else:
        question = f"Convert {value} {source.symbol} to {target.symbol}."
    return question, convert(value, source.symbol, target.symbol)


def make_tasks(
    n: int,
    difficulty: int | Difficulty = DEFAULT_LEVEL,
    seed: int = 0,
    kinds: tuple[str, ...] | list[str] = KINDS,
) -> list[agl.Task]:
    """``n`` tasks at ``difficulty`` (a level of :data:`LEVELS` or a :class:`Difficulty`), drawn from ``seed``,
    cycling through ``kinds`` (``"math"``, ``"units"``) in the order given."""
    if isinstance(difficulty, int):
        if difficulty not in LEVELS:
            raise ValueError(f"No difficulty level {difficulty}; the levels are {sorted(LEVELS)}.")
        level: int | str = difficulty
        difficulty = LEVELS[difficulty]
    else:
        level = "custom"
    if not kinds or set(kinds) - set(KINDS):
        raise ValueError(f"kinds must name some of {KINDS}, not {kinds!r}.")
    # One stream per kind, so asking for one kind gives the same questions as that kind's share of a mix.
    streams = {kind: random.Random(f"triage/{kind}/{difficulty!r}/{seed}") for kind in KINDS}
    counts = dict.fromkeys(KINDS, 0)
    tasks = []
    for index in range(n):
        kind = kinds[index % len(kinds)]
        make = _math_question if kind == "math" else _units_question
        question, answer = make(streams[kind], difficulty)
        counts[kind] += 1
        tasks.append(
            agl.Task(
                id=f"triage-{level}-{seed}-{kind}-{counts[kind] - 1}",
                input={"question": question, "answer": answer, "specialist": kind},
            )
        )
    return tasks
