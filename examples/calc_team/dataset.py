"""A seeded generator of calc-team tasks: arithmetic questions, their operators in symbols or in words.

    from dataset import LEVELS, Difficulty, make_tasks

    tasks = make_tasks(100, difficulty=3, seed=0)  # a level of LEVELS, or a Difficulty(...)
    tasks[0].input  # {"question": "What is 60 minus 12?", "answer": 48}

A task is an ``agl.Task`` whose input is ``{"question": str, "answer": int}``. The arithmetic is the calc
example's (``examples/calc/dataset.py``, reused here): one expression of ``operands`` whole numbers of ``digits``
digits joined by ``+``, ``-``, ``*``, with the usual precedence and no division, so every answer is a whole number.
What this generator adds is the wording: in a share ``words`` of the questions the operators are written out
(``"What is 7 plus 5 times 3?"``), which the solver must turn back into an expression for its calculator. The same
arguments give the same tasks; more tasks extend the list rather than reshuffle it.
"""

from __future__ import annotations

import importlib.util
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import agentlightning as agl

__all__ = ["DEFAULT_LEVEL", "LEVELS", "PHRASES", "WORDS", "Difficulty", "make_tasks"]


def _calc_dataset() -> ModuleType:
    """``examples/calc/dataset.py``, imported under a name of its own (this file is ``dataset`` too)."""
    name = "calc_example_dataset"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "calc" / "dataset.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


calc = _calc_dataset()

#: How each operator is written out.
WORDS = {"+": "plus", "-": "minus", "*": "times"}


@dataclass(frozen=True)
class Difficulty:
    """What makes a question hard: the calc example's arithmetic (how many numbers, how long, which operators) and
    the wording: the share ``phrases`` of the questions phrased as a sentence (two operands only: ``"Subtract 12
    from 60."``, ``"What is the product of 7 and 9?"``) and the share ``words`` of the others that write the
    operators out (``"What is 60 minus 12?"``); the rest are in symbols (``"What is 60 - 12?"``)."""

    operands: int = 2
    digits: int = 1
    operators: str = "+"
    words: float = 0.0
    phrases: float = 0.0

    def __post_init__(self) -> None:
        for name in ("words", "phrases"):
            share = getattr(self, name)
            if not 0 <= share <= 1:
                raise ValueError(f"{name} is a share of the questions, between 0 and 1, not {share}.")
        if self.phrases and self.operands != 2:
            raise ValueError(f"Only questions of 2 operands are phrased, not of {self.operands}; set phrases=0.")
        _ = self.arithmetic  # the calc example's Difficulty checks the rest

    @property
    def arithmetic(self) -> object:
        """The calc example's ``Difficulty`` of the same numbers and operators."""
        return calc.Difficulty(operands=self.operands, digits=self.digits, operators=self.operators)

    def __str__(self) -> str:
        if self.phrases == 1:
            return f"{self.arithmetic}, phrased"
        words = {0.0: "symbols", 1.0: "words"}.get(self.words, f"words {self.words:.0%} of the time")
        phrased = f"phrased {self.phrases:.0%} of the time, otherwise " if self.phrases else ""
        return f"{self.arithmetic}, {phrased}operators as {words}"


#: Sentences for ``a op b``; the solver must put the numbers back in order ("Subtract 12 from 60" is 60 - 12).
PHRASES = {
    "+": ("What is the sum of {a} and {b}?", "Add {b} to {a}."),
    "-": ("Subtract {b} from {a}.", "What is {b} less than {a}?", "Take {b} away from {a}."),
    "*": ("What is the product of {a} and {b}?", "Multiply {a} by {b}."),
}

#: Named settings, roughly easiest to hardest for a small model (README.md has the measured rates).
LEVELS: dict[int, Difficulty] = {
    1: Difficulty(operands=2, digits=1, operators="+", words=0.0),
    2: Difficulty(operands=2, digits=2, operators="+-*", words=0.5),
    3: Difficulty(operands=2, digits=2, operators="+-*", words=1.0),
    4: Difficulty(operands=3, digits=1, operators="+-*", words=1.0),
    5: Difficulty(operands=2, digits=2, operators="+-*", phrases=0.5, words=1.0),
    6: Difficulty(operands=2, digits=2, operators="+-*", phrases=1.0),
}

#: The level where the untrained SmolLM2-135M-Instruct's solver, sampled, is right 10-50% of the time (README.md).
DEFAULT_LEVEL = 6

_OPERATOR = re.compile(r" ([-+*]) ")
_TWO_OPERANDS = re.compile(r"What is (\d+) ([-+*]) (\d+)\?")


def make_tasks(n: int, difficulty: int | Difficulty = DEFAULT_LEVEL, seed: int = 0) -> list[agl.Task]:
    """``n`` tasks at ``difficulty`` (a level of :data:`LEVELS` or a :class:`Difficulty`), drawn from ``seed``."""
    if isinstance(difficulty, int):
        if difficulty not in LEVELS:
            raise ValueError(f"No difficulty level {difficulty}; the levels are {sorted(LEVELS)}.")
        level: int | str = difficulty
        difficulty = LEVELS[difficulty]
    else:
        level = "custom"
    # The wording has a stream of its own, so the arithmetic is the calc example's for the same seed.
    rng = random.Random(f"calc_team/{difficulty!r}/{seed}")
    tasks = []
    for index, task in enumerate(calc.make_tasks(n, difficulty.arithmetic, seed)):
        question = str(task.input["question"])
        phrased, in_words = rng.random() < difficulty.phrases, rng.random() < difficulty.words
        if phrased and (match := _TWO_OPERANDS.fullmatch(question)):
            question = rng.choice(PHRASES[match[2]]).format(a=match[1], b=match[3])
        elif in_words:
            question = _OPERATOR.sub(lambda match: f" {WORDS[match[1]]} ", question)
        tasks.append(
            agl.Task(
                id=f"calc_team-{level}-{seed}-{index}", input={"question": question, "answer": task.input["answer"]}
            )
        )
    return tasks
