"""Module-level agents, importable by the processes tests start (``agl runner --agent agents_for_tests:NAME``,
``Trainer(processes=True)``), which can only reach an agent by its module and name.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import agentlightning as agl

# How long an agent that is meant to be killed waits at most, so nothing hangs if the kill never comes.
HANG_SECONDS = 60.0


@agl.rollout
async def slow_agent(task: Any, rollout: agl.AttemptedRollout) -> float:
    """First attempt: write its attempt id to the file ``task["marker"]``, then hang (until killed). Later ones: 1.0."""
    if rollout.attempt.sequence_id == 1:
        await asyncio.to_thread(Path(task["marker"]).write_text, rollout.attempt.attempt_id)
        await asyncio.sleep(HANG_SECONDS)
        return 0.0
    return 1.0


@agl.rollout
async def napping_agent(task: Any) -> float:
    """Sleep ``task["sleep"]`` seconds, then return ``task["value"]`` as the reward."""
    await asyncio.sleep(task["sleep"])
    return float(task["value"])


@agl.rollout
def rendezvous_agent(task: Any) -> float:
    """Wait until agents in ``task["processes"]`` different processes have run (each leaves its pid in the folder
    ``task["folder"]``), so every runner process is known to do work; then return ``task["value"]``."""
    folder = Path(task["folder"])
    (folder / str(os.getpid())).touch()
    deadline = time.monotonic() + HANG_SECONDS
    while len(list(folder.iterdir())) < task["processes"]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(folder.iterdir()))} runner processes ever ran a rollout")
        time.sleep(0.01)
    return float(task["value"])


class DoublingAgent(agl.LitAgent):
    """A class-based agent: the reward is twice the task's number."""

    name = "doubler"

    async def rollout(self, task: Any, resources: agl.Resources, rollout: agl.AttemptedRollout) -> float:
        return 2.0 * float(task)


doubler = DoublingAgent()
