"""The room selector example (examples/room_selector): its task generator, its reward, the agent run by
``Trainer.dev`` through a real ``agl.Gateway``, and apo.py for one round.

The model server is ``serve_scripted``: a real ``TransformersEngine`` on 127.0.0.1 whose model says what the script
says. As the agent's model it reads the meeting and the rooms back from the prompt, so every reward is known; as
the optimizer (a request holding the first line of APO's critique or edit prompt) it proposes a prompt that asks
for a fitting room, which the scripted agent then always finds. Nothing reaches the internet.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agentlightning_apo import load_prompt
from agentlightning_engine.testing import serve_scripted

import agentlightning as agl
from agentlightning.testing import no_outbound_connections as no_outbound_connections
from examples import EXAMPLES, load_example

EXAMPLE = EXAMPLES / "room_selector"
dataset = load_example("room_selector", "dataset")
rooms_agent = load_example("room_selector", "agent")

CRITIQUE_MARK = load_prompt("critique").template.splitlines()[0]
EDIT_MARK = load_prompt("edit").template.splitlines()[0]
#: What the scripted optimizer adds to a prompt; the scripted agent's model picks a fitting room when it reads it.
HINT = "Answer with the id of a room that seats everyone, has every need and is free then."


# --- the dataset -----------------------------------------------------------------------------------------------


def test_tasks_are_seeded() -> None:
    assert [t.input for t in dataset.make_tasks(5, 3, seed=4)] == [t.input for t in dataset.make_tasks(5, 3, seed=4)]
    assert [t.input for t in dataset.make_tasks(5, 3, seed=4)] != [t.input for t in dataset.make_tasks(5, 3, seed=5)]
    assert len({t.id for t in dataset.make_tasks(20, 2, seed=0)}) == 20


@pytest.mark.parametrize("level", sorted(dataset.LEVELS))
def test_every_task_has_exactly_the_fitting_rooms_its_level_says(level: int) -> None:
    difficulty = dataset.LEVELS[level]
    for task in dataset.make_tasks(50, level, seed=1):
        meeting, rooms = task.input["meeting"], task.input["rooms"]
        assert len(rooms) == difficulty.rooms and len(meeting["needs"]) == difficulty.needs
        fitting = [room["id"] for room in rooms if rooms_agent.fits(room, meeting)]
        assert fitting == task.input["fitting"] and len(fitting) == difficulty.fitting  # never unsolvable


def test_the_difficulty_knob_changes_the_tasks() -> None:
    custom = dataset.Difficulty(rooms=9, fitting=3, needs=0)
    task = dataset.make_tasks(1, custom, seed=0)[0]
    assert len(task.input["rooms"]) == 9 and len(task.input["fitting"]) == 3 and task.input["meeting"]["needs"] == []
    with pytest.raises(ValueError, match="fitting"):
        dataset.Difficulty(rooms=3, fitting=3)
    with pytest.raises(ValueError, match="No difficulty level 9"):
        dataset.make_tasks(1, 9)


# --- the reward ------------------------------------------------------------------------------------------------

MEETING = {"people": 6, "needs": ["projector"], "time": "10:00"}
ROOMS = [
    {"id": "R1", "capacity": 4, "equipment": ["projector"], "booked": []},  # too small
    {"id": "R2", "capacity": 8, "equipment": ["whiteboard"], "booked": []},  # no projector
    {"id": "R3", "capacity": 8, "equipment": ["projector"], "booked": ["10:00"]},  # booked then
    {"id": "R4", "capacity": 6, "equipment": ["projector", "video"], "booked": ["11:00"]},  # fits
]


@pytest.mark.parametrize(
    ("answer", "reward"),
    [
        ("R4", 1.0),
        ("r4", 1.0),
        ("I would book **R4**.", 1.0),
        ("Room 4", 1.0),
        ("room #4 fits best", 1.0),
        ("R4, not R1", 1.0),  # the first room named is the choice
        ("R1, then R4", 0.0),
        ("R1", 0.0),  # too small
        ("R2", 0.0),  # no projector
        ("R3", 0.0),  # booked at 10:00
        ("R7", 0.0),  # not in the list
        ("R44", 0.0),
        ("I cannot decide.", 0.0),
        ("", 0.0),
    ],
)
def test_reward_is_one_when_the_room_named_first_fits_every_constraint(answer: str, reward: float) -> None:
    assert rooms_agent.reward({"meeting": MEETING, "rooms": ROOMS}, answer) == reward


def test_the_prompt_shows_the_meeting_and_every_room() -> None:
    meeting, rooms = rooms_agent.describe(MEETING, ROOMS)
    assert meeting == "6 people at 10:00 for one hour, needs projector"
    assert rooms.splitlines()[0] == "R1: seats 4; has projector; free all day"
    assert rooms.splitlines()[2] == "R3: seats 8; has projector; booked at 10:00"


# --- the scripted model server ---------------------------------------------------------------------------------


def read_task(prompt: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The meeting and the rooms back from the text of a rendered prompt (:func:`agent.describe`'s format)."""
    item = "(?:projector|whiteboard|video|no equipment)"
    people, time, needs = re.search(  # type: ignore[union-attr]
        rf"(\d+) people at (\d+:00) for one hour, needs ({item}(?: and {item})*)", prompt
    ).groups()
    rooms = [
        {"id": rid, "capacity": int(seats), "equipment": equipment.split(", "), "booked": (booked or "").split(", ")}
        for rid, seats, equipment, booked in re.findall(
            r"(R\d): seats (\d+); has (.+?); (?:booked at (\d+:00(?:, \d+:00)*)|free all day)", prompt
        )
    ]
    return {"people": int(people), "needs": needs.split(" and "), "time": time}, rooms


def naive_model(prompt: str) -> str:
    """The agent's model: a fitting room, in a lenient format, when its prompt holds :data:`HINT`; else room 1."""
    meeting, rooms = read_task(prompt)
    if HINT in prompt:
        return "I would book **room {}**.".format(next(r for r in rooms if rooms_agent.fits(r, meeting))["id"][1:])
    return "R1"


def optimizer(prompt: str) -> str:
    if CRITIQUE_MARK in prompt:
        return "The prompt never says which rooms are allowed."
    template = prompt.split("<template>\n", 1)[1].split("\n</template>", 1)[0]
    if HINT in template:
        return "It is good as it is."  # unusable: no <prompt> block, so APO skips it
    return f"Here it is.\n<prompt>{template} {HINT}</prompt>"


_script: dict[str, Callable[[str], str]] = {"agent": naive_model}


def scripted(prompt: str) -> str:
    if CRITIQUE_MARK in prompt or EDIT_MARK in prompt:
        return optimizer(prompt)
    return _script["agent"](prompt)


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    with serve_scripted(scripted) as served:
        yield served


@pytest.fixture
def store(tmp_path: Path) -> Iterator[agl.SqliteStore]:
    store = agl.SqliteStore(tmp_path / "runs.db")
    yield store
    asyncio.run(store.close())


# --- the agent -------------------------------------------------------------------------------------------------


def test_the_agent_renders_its_template_with_the_resource_sampling_and_is_rewarded_for_the_room_it_names(
    server: Any, store: agl.SqliteStore
) -> None:
    tasks = dataset.make_tasks(8, 3, seed=3)
    tail = " because it fits the meeting and has all the equipment it needs."  # cut off by max_tokens
    answers = {t.id: ("R1" if i % 2 else f"Room {t.input['fitting'][0][1:]}") + tail for i, t in enumerate(tasks)}
    expected = {t.id: 1.0 if "R1" in t.input["fitting"] or i % 2 == 0 else 0.0 for i, t in enumerate(tasks)}
    assert 0 < sum(expected.values()) < len(tasks)
    by_meeting = {rooms_agent.describe(t.input["meeting"], t.input["rooms"])[1]: answers[t.id] for t in tasks}
    _script["agent"] = lambda prompt: next(a for rooms, a in by_meeting.items() if rooms in prompt)
    try:
        with agl.Gateway(server.url, store) as gateway:
            trainer = agl.Trainer(
                store=store,
                initial_resources={
                    "llm": gateway.llm("scripted", temperature=0, max_tokens=6),
                    "prompt_template": agl.PromptTemplate(template=rooms_agent.SEED_PROMPT),
                },
            )
            rollouts = trainer.dev(rooms_agent.room_selector, tasks).rollouts
    finally:
        _script["agent"] = naive_model
    assert {str(r.metadata["task_id"]): reward for r, reward in rollouts} == expected
    # The gateway recorded the call: the rendered seed prompt as the one user message.
    rollout, _ = rollouts[0]
    task = next(t for t in tasks if t.id == rollout.metadata["task_id"])
    (call,) = agl.TraceToTrajectory().adapt(asyncio.run(store.query_spans(rollout.rollout_id, "latest"))).transitions
    meeting, rooms = rooms_agent.describe(task.input["meeting"], task.input["rooms"])
    assert call.input_messages == [{"role": "user", "content": f"Pick a room: {rooms} for {meeting}"}]
    # The resource's sampling parameters reach the server: the reply stops at max_tokens.
    assert len(call.completion_token_ids or []) == 6
    assert not str(call.output_messages[0]["content"]).endswith("needs.")


# --- apo.py ----------------------------------------------------------------------------------------------------


def test_apo_script_prints_each_round_the_best_prompt_and_writes_the_history(server: Any, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE / "apo.py"),
            *("--rounds", "1", "--train-tasks", "4", "--val-tasks", "6", "--level", "3"),
            *("--base-url", server.url, "--model", "scripted"),
            *("--optimizer-base-url", server.url, "--optimizer-model", "scripted"),
            *("--out", str(tmp_path / "out")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    val = dataset.make_tasks(6, 3, seed=2000)
    seed_score = sum("R1" in t.input["fitting"] for t in val) / len(val)  # the seed prompt: the model says R1
    assert "level 3 (4 rooms, 1 fitting, 2 needs): 1 rounds, beam 2, 2 edits per beam prompt" in out
    assert f"seed c0: validation reward {seed_score:.3f}" in out
    # Both edits of the seed add the hint, so the second is a duplicate, skipped; the first always finds a room.
    assert "round 1: validation reward of its edits: c1 1.000; 1 edit skipped; best so far c1 1.000" in out
    assert "skipped edits: 1 x the edit is the same as candidate c1" in out
    assert f"seed score {seed_score:.3f} -> best score 1.000 (c1)" in out
    assert f"best prompt:\n---\n{rooms_agent.SEED_PROMPT} {HINT}\n---" in out
    assert "APO round 1: best c1 (1.000)" in out  # APO's own table
    assert f"store:   {tmp_path / 'out' / 'runs.db'}" in out

    history = json.loads((tmp_path / "out" / "apo.json").read_text())
    assert history["seed_score"] == pytest.approx(seed_score) and history["best_score"] == 1.0
    assert [c["id"] for c in history["candidates"]] == ["c0", "c1"]
    assert history["candidates"][1]["prompts"]["prompt_template"] == f"{rooms_agent.SEED_PROMPT} {HINT}"
    assert history["candidates"][1]["critique"] == "The prompt never says which rooms are allowed."
    (first,) = history["rounds"]
    assert first["children"] == ["c1"] and len(first["skipped"]) == 1
