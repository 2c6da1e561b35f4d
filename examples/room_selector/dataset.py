"""A seeded generator of room-booking tasks with a difficulty knob.

    from dataset import LEVELS, make_tasks

    tasks = make_tasks(20, difficulty=2, seed=0)
    tasks[0].input["meeting"]  # {"people": 6, "needs": ["projector"], "time": "14:00"}
    tasks[0].input["rooms"]    # [{"id": "R1", "capacity": 4, "equipment": [...], "booked": ["9:00"]}, ...]

A task is a meeting (how many people, the equipment it needs among ``EQUIPMENT``, its start time, one hour long)
and a small list of rooms (id ``R1``, ``R2``…, seats, equipment, hours already booked). A room fits when it seats
everyone, has every needed piece of equipment and is free at that hour (``agent.fits``, the reward's rule). Each
task has exactly ``fitting`` rooms that fit (at least one, so every task can be solved; ``input["fitting"]`` lists
them); each other room breaks one rule, drawn at random: too small, one needed item missing, or booked at that
hour. The same arguments give the same tasks.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import agentlightning as agl

__all__ = ["EQUIPMENT", "HOURS", "Difficulty", "LEVELS", "DEFAULT_LEVEL", "make_tasks"]

EQUIPMENT = ("projector", "whiteboard", "video")
HOURS = tuple(f"{h}:00" for h in range(9, 18))


@dataclass(frozen=True)
class Difficulty:
    """What makes a task hard: how many rooms to choose from, how many of them fit, how many needs the meeting has."""

    rooms: int = 4
    fitting: int = 1
    needs: int = 1

    def __post_init__(self) -> None:
        if not 2 <= self.rooms <= 9:
            raise ValueError(f"rooms must be between 2 and 9 (ids R1-R9), not {self.rooms}.")
        if not 1 <= self.fitting < self.rooms:
            raise ValueError(f"fitting must be at least 1 and below rooms ({self.rooms}), not {self.fitting}.")
        if not 0 <= self.needs <= len(EQUIPMENT):
            raise ValueError(f"needs must be between 0 and {len(EQUIPMENT)}, not {self.needs}.")

    def __str__(self) -> str:
        return f"{self.rooms} rooms, {self.fitting} fitting, {self.needs} need{'s' if self.needs != 1 else ''}"


#: Named settings, easiest to hardest: a random pick is right ``fitting / rooms`` of the time.
LEVELS: dict[int, Difficulty] = {
    1: Difficulty(rooms=3, fitting=2, needs=1),
    2: Difficulty(rooms=4, fitting=2, needs=1),
    3: Difficulty(rooms=4, fitting=1, needs=2),
    4: Difficulty(rooms=6, fitting=1, needs=2),
    5: Difficulty(rooms=8, fitting=1, needs=3),
}

DEFAULT_LEVEL = 2


def _room(rng: random.Random, meeting: Mapping[str, Any], broken: str | None) -> dict[str, Any]:
    """A room that fits the meeting, or (``broken``) one that breaks that one rule and keeps the others."""
    people, needs, time = meeting["people"], list(meeting["needs"]), meeting["time"]
    capacity = rng.randint(people, people + 6) if broken != "capacity" else rng.randint(2, people - 1)
    extra = [item for item in EQUIPMENT if item not in needs and rng.random() < 0.5]
    equipment = needs + extra
    if broken == "equipment":
        equipment.remove(rng.choice(needs))
    others = [hour for hour in HOURS if hour != time]
    booked = rng.sample(others, rng.randint(0, 2))
    if broken == "booked":
        booked.append(time)
    return {
        "capacity": capacity,
        "equipment": [item for item in EQUIPMENT if item in equipment],
        "booked": sorted(booked, key=HOURS.index),
    }


def make_tasks(n: int, difficulty: int | Difficulty = DEFAULT_LEVEL, seed: int = 0) -> list[agl.Task]:
    """``n`` tasks at ``difficulty`` (a level of :data:`LEVELS` or a :class:`Difficulty`), drawn from ``seed``.

    Each input is ``{"meeting": {...}, "rooms": [...], "fitting": [room ids]}``."""
    if isinstance(difficulty, int):
        if difficulty not in LEVELS:
            raise ValueError(f"No difficulty level {difficulty}; the levels are {sorted(LEVELS)}.")
        level: int | str = difficulty
        difficulty = LEVELS[difficulty]
    else:
        level = "custom"
    rng = random.Random(f"room_selector/{difficulty!r}/{seed}")  # a string seed is stable across runs
    tasks = []
    for index in range(n):
        meeting = {
            "people": rng.randint(3, 12),
            "needs": sorted(rng.sample(EQUIPMENT, difficulty.needs), key=EQUIPMENT.index),
            "time": rng.choice(HOURS),
        }
        rules = ["capacity", "booked"] + (["equipment"] if meeting["needs"] else [])
        kinds: list[str | None] = [None] * difficulty.fitting
        kinds += [rng.choice(rules) for _ in range(difficulty.rooms - difficulty.fitting)]
        rng.shuffle(kinds)
        rooms = [{"id": f"R{i + 1}", **_room(rng, meeting, kind)} for i, kind in enumerate(kinds)]
        tasks.append(
            agl.Task(
                id=f"rooms-{level}-{seed}-{index}",
                input={
                    "meeting": meeting,
                    "rooms": rooms,
                    "fitting": [room["id"] for room, kind in zip(rooms, kinds, strict=True) if kind is None],
                },
            )
        )
    return tasks
