"""The room selector: one call of the ``openai`` client, its prompt rendered from the ``prompt_template`` resource.

    @agl.rollout
    async def room_selector(task, llm: agl.LLM, prompt_template: agl.PromptTemplate) -> float

The template has two placeholders, ``{meeting}`` and ``{rooms}`` (the text of :func:`describe`); the
rendered prompt is the one user message of a chat completion at ``llm.base_url`` (the rollout's gateway URL, so the
call is recorded and APO's critique reads it), with the LLM resource's sampling parameters. The reward is 1.0 when
the room the reply names (:func:`chosen_room`) fits the meeting, else 0.0: several rooms may fit, any of them counts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from openai import AsyncOpenAI

import agentlightning as agl

__all__ = ["SEED_PROMPT", "room_selector", "describe", "fits", "chosen_room", "reward"]

#: Deliberately weak: it says neither what fits nor how to answer, so APO has something to improve.
SEED_PROMPT = "Pick a room: {rooms} for {meeting}"

#: A room id as written (``R3``, ``r3``, ``**R3**``), or ``room 3`` / ``Room #3``.
_ROOM = re.compile(r"\b(?:R|room\s*#?\s*)(\d)\b", re.IGNORECASE)


def fits(room: Mapping[str, Any], meeting: Mapping[str, Any]) -> bool:
    """Whether ``room`` seats the meeting's people, has all its needs and is free at its time."""
    return (
        room["capacity"] >= meeting["people"]
        and set(meeting["needs"]) <= set(room["equipment"])
        and meeting["time"] not in room["booked"]
    )


def describe(meeting: Mapping[str, Any], rooms: list[Mapping[str, Any]]) -> tuple[str, str]:
    """The meeting and the rooms as the text the agent's prompt shows (its ``{meeting}`` and ``{rooms}``)."""
    needs = " and ".join(meeting["needs"]) or "no equipment"
    meeting_text = f"{meeting['people']} people at {meeting['time']} for one hour, needs {needs}"
    lines = [
        f"{room['id']}: seats {room['capacity']}; has {', '.join(room['equipment']) or 'no equipment'}; "
        + (f"booked at {', '.join(room['booked'])}" if room["booked"] else "free all day")
        for room in rooms
    ]
    return meeting_text, "\n".join(lines)


def chosen_room(answer: str, room_ids: list[str]) -> str | None:
    """The first room of ``room_ids`` the answer names, read leniently (case, ``room 3``, markdown); else ``None``."""
    for match in _ROOM.finditer(answer):
        room = f"R{match[1]}"
        if room in room_ids:
            return room
    return None


def reward(task: Mapping[str, Any], answer: str) -> float:
    """1.0 when the room the answer names fits every constraint of the meeting, else 0.0 (no room named: 0.0)."""
    rooms = {room["id"]: room for room in task["rooms"]}
    room = chosen_room(answer, list(rooms))
    return 1.0 if room is not None and fits(rooms[room], task["meeting"]) else 0.0


@agl.rollout
async def room_selector(task: dict[str, Any], llm: agl.LLM, prompt_template: agl.PromptTemplate) -> float:
    """Ask the model for a room with the rendered template; the reward says whether that room fits."""
    meeting, rooms = describe(task["meeting"], task["rooms"])
    async with AsyncOpenAI(base_url=llm.base_url, api_key=llm.api_key or "unused") as client:
        reply = await client.chat.completions.create(
            model=llm.model,
            messages=[{"role": "user", "content": prompt_template.format(meeting=meeting, rooms=rooms)}],
            extra_body=llm.sampling_parameters,  # temperature, max_tokens...: whatever the resource says, as sent
        )
    return reward(task, reply.choices[0].message.content or "")
