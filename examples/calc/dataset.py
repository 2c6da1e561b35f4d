"""A seeded generator of arithmetic tasks with a difficulty knob.

    from dataset import LEVELS, Difficulty, make_tasks

    tasks = make_tasks(100, difficulty=3, seed=0)  # a level of LEVELS, or a Difficulty(...)
    tasks[0].input  # {"question": "What is 60 - 12?", "answer": 48}

A task is an ``agl.Task`` whose input is ``{"question": str, "answer": int}``. The question is one
expression of ``operands`` whole numbers of ``digits`` digits each (1 digit: 1-9; 2 digits: 10-99),
joined by operators drawn from ``operators`` (``+``, ``-``, ``*``); the answer follows the usual
precedence (``*`` before ``+`` / ``-``, then left to right), and may be negative. There is no
division, so every answer is a whole number. The same arguments give the same tasks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import agentlightning as agl

__all__ = ["Difficulty", "LEVELS", "DEFAULT_LEVEL", "make_tasks", "evaluate"]

OPERATORS = "+-*"


@dataclass(frozen=True)
class Difficulty:
    """What makes a question hard: how many numbers, how long they are, which operators join them."""

    operands: int = 2
    digits: int = 1
    operators: str = "+"

    def __post_init__(self) -> None:
        if self.operands < 2:
            raise ValueError(f"A question needs at least 2 operands, not {self.operands}.")
        if not 1 <= self.digits <= 6:
            raise ValueError(f"digits must be between 1 and 6, not {self.digits}.")
        if not self.operators or set(self.operators) - set(OPERATORS):
            raise ValueError(f"operators must be a non-empty subset of {OPERATORS!r}, not {self.operators!r}.")

    def __str__(self) -> str:
        return f"{self.operands} operands, {self.digits} digit{'s' if self.digits > 1 else ''}, {self.operators}"


#: Named settings, roughly easiest to hardest for a small model (see README.md for measured success rates).
LEVELS: dict[int, Difficulty] = {
    1: Difficulty(operands=2, digits=1, operators="+"),
    2: Difficulty(operands=2, digits=1, operators="+-*"),
    3: Difficulty(operands=2, digits=2, operators="+-"),
    4: Difficulty(operands=3, digits=1, operators="+-*"),
    5: Difficulty(operands=3, digits=2, operators="+-"),
    6: Difficulty(operands=3, digits=2, operators="+-*"),
}

#: The level where the untrained SmolLM2-135M-Instruct succeeds 10-50% of the time, greedy or sampled (README.md).
DEFAULT_LEVEL = 1


def evaluate(numbers: list[int], operators: list[str]) -> int:
    """The value of ``numbers[0] operators[0] numbers[1] ...``: ``*`` first, then ``+`` / ``-`` left to right."""
    if len(operators) != len(numbers) - 1:
        raise ValueError(f"{len(numbers)} numbers need {len(numbers) - 1} operators, not {len(operators)}.")
    terms, signs = [numbers[0]], [1]
    for op, number in zip(operators, numbers[1:], strict=True):
        if op == "*":
            terms[-1] *= number
        else:
            terms.append(number)
            signs.append(1 if op == "+" else -1)
    return sum(sign * term for sign, term in zip(signs, terms, strict=True))


def make_tasks(n: int, difficulty: int | Difficulty = DEFAULT_LEVEL, seed: int = 0) -> list[agl.Task]:
    """``n`` tasks at ``difficulty`` (a level of :data:`LEVELS` or a :class:`Difficulty`), drawn from ``seed``."""
    if isinstance(difficulty, int):
        if difficulty not in LEVELS:
            raise ValueError(f"No difficulty level {difficulty}; the levels are {sorted(LEVELS)}.")
        level: int | str = difficulty
        difficulty = LEVELS[difficulty]
    else:
        level = "custom"
    rng = random.Random(f"calc/{difficulty!r}/{seed}")  # a string seed is stable across runs and platforms
    low, high = 10 ** (difficulty.digits - 1), 10**difficulty.digits - 1
    tasks = []
    for index in range(n):
        numbers = [rng.randint(low, high) for _ in range(difficulty.operands)]
        operators = [rng.choice(difficulty.operators) for _ in range(difficulty.operands - 1)]
        expression = " ".join(
            [str(numbers[0])] + [f"{op} {number}" for op, number in zip(operators, numbers[1:], strict=True)]
        )
        tasks.append(
            agl.Task(
                id=f"calc-{level}-{seed}-{index}",
                input={"question": f"What is {expression}?", "answer": evaluate(numbers, operators)},
            )
        )
    return tasks
