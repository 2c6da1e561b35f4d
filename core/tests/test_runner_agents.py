"""The runner runs every agent shape: functions of any signature it can fill, sync or async, and LitAgent classes,
each with its rollout's resources; bad signatures fail at decoration; the runner stops when told.

Everything runs against a real SQLite store (the ``db`` fixture). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from background_runner import PATIENCE, finished, named, running

import agentlightning as agl
from agentlightning import RolloutStatus, semconv
from agentlightning.reward import final_reward

V1: dict[str, agl.AnyResource] = {
    "llm": agl.LLM(base_url="http://127.0.0.1:9/v1", model="model-v1"),
    "prompt_template": agl.PromptTemplate(template="v1: {question}"),
}
V2: dict[str, agl.AnyResource] = {
    "llm": agl.LLM(base_url="http://127.0.0.1:9/v1", model="model-v2"),
    "prompt_template": agl.PromptTemplate(template="v2: {question}"),
}


def shaped_agents(seen: dict[str, dict[str, Any]]) -> dict[str, Callable[..., Any]]:
    """One function per signature the runner can fill, sync and async; each notes what it got and returns
    ``task["reward"]``."""

    def note(task: Any, **got: Any) -> float | None:
        seen[task["name"]] = got
        reward: float | None = task["reward"]
        return reward

    def task_(task: Any) -> Any:
        return note(task)

    async def task_async(task: Any) -> Any:
        return note(task)

    def llm_(task: Any, llm: agl.LLM) -> Any:
        return note(task, llm=llm.model)

    async def llm_async(task: Any, llm: agl.LLM) -> Any:
        return note(task, llm=llm.model)

    def prompt_(task: Any, prompt_template: agl.PromptTemplate) -> Any:
        return note(task, prompt=prompt_template.format(question="q"))

    async def prompt_async(task: Any, prompt_template: agl.PromptTemplate) -> Any:
        return note(task, prompt=prompt_template.format(question="q"))

    def resources_(task: Any, resources: agl.Resources) -> Any:
        return note(task, resources=resources.resources_id)

    async def resources_async(task: Any, resources: agl.Resources) -> Any:
        return note(task, resources=resources.resources_id)

    def task_rollout(task: Any, rollout: agl.AttemptedRollout) -> Any:
        return note(task, rollout=rollout.rollout_id)

    async def task_rollout_async(task: Any, rollout: agl.AttemptedRollout) -> Any:
        return note(task, rollout=rollout.rollout_id)

    def llm_rollout(task: Any, llm: agl.LLM, rollout: agl.AttemptedRollout) -> Any:
        return note(task, llm=llm.model, rollout=rollout.rollout_id)

    async def llm_rollout_async(task: Any, llm: agl.LLM, rollout: agl.AttemptedRollout) -> Any:
        return note(task, llm=llm.model, rollout=rollout.rollout_id)

    def prompt_rollout(task: Any, prompt_template: agl.PromptTemplate, rollout: agl.AttemptedRollout) -> Any:
        return note(task, prompt=prompt_template.format(question="q"), rollout=rollout.rollout_id)

    async def prompt_rollout_async(
        task: Any, prompt_template: agl.PromptTemplate, rollout: agl.AttemptedRollout
    ) -> Any:
        return note(task, prompt=prompt_template.format(question="q"), rollout=rollout.rollout_id)

    def resources_rollout(task: Any, resources: agl.Resources, rollout: agl.AttemptedRollout) -> Any:
        return note(task, resources=resources.resources_id, rollout=rollout.rollout_id)

    async def resources_rollout_async(task: Any, resources: agl.Resources, rollout: agl.AttemptedRollout) -> Any:
        return note(task, resources=resources.resources_id, rollout=rollout.rollout_id)

    return {fn.__name__: fn for fn in list(locals().values()) if callable(fn) and fn is not note}


SHAPES = list(shaped_agents({}))


@pytest.mark.parametrize("shape", SHAPES)
async def test_every_agent_shape_gets_its_rollouts_resources_and_reports_its_reward(
    db: agl.SqliteStore, shape: str
) -> None:
    seen: dict[str, dict[str, Any]] = {}
    agent = agl.rollout(shaped_agents(seen)[shape])
    assert agent.is_async == shape.endswith("_async")
    assert agent.uses_resources == any(k in shape for k in ("llm", "prompt", "resources"))
    v1 = await db.add_resources(V1)
    v2 = await db.add_resources(V2)  # the latest
    pinned = await db.enqueue_rollout({"name": "pinned", "reward": 0.5}, resources_id=v1.resources_id)
    latest = await db.enqueue_rollout({"name": "latest", "reward": None})
    async with running(agent, db):
        done = await finished(db, [pinned, latest])
    assert [r.status for r in done] == [RolloutStatus.SUCCEEDED] * 2

    # Each rollout got the resources version it names; one that names none got the latest.
    for rollout, version, model, prompt in ((pinned, v1, "model-v1", "v1: q"), (latest, v2, "model-v2", "v2: q")):
        got = seen[rollout.input["name"]]  # type: ignore[index,call-overload]
        assert got.get("llm", model) == model
        assert got.get("prompt", prompt) == prompt
        assert got.get("resources", version.resources_id) == version.resources_id
        assert got.get("rollout", rollout.rollout_id) == rollout.rollout_id
        assert set(got) == {k for k in ("llm", "prompt", "resources", "rollout") if k in shape}

    # A returned float is the final reward, recorded under the runner's root span; None records none.
    spans = await db.query_spans(pinned.rollout_id, "latest")
    (root,) = [s for s in spans if s.parent_id is None]
    assert root.name == f"agentlightning.rollout {agent.name}"
    (reward,) = named(spans, semconv.SPAN_REWARD)
    assert reward.parent_id == root.span_id and final_reward(spans) == 0.5
    spans = await db.query_spans(latest.rollout_id, "latest")
    assert not named(spans, semconv.SPAN_REWARD) and not named(spans, semconv.SPAN_EXCEPTION)
    assert final_reward(spans) is None


class SyncAgent(agl.LitAgent):
    """A class-based agent whose rollout is a plain method."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, str, str, bool]] = []

    def rollout(self, task: Any, resources: agl.Resources, rollout: agl.AttemptedRollout) -> float:
        on_loop_thread = threading.current_thread() is threading.main_thread()
        self.seen.append((task, resources.resources_id, rollout.rollout_id, on_loop_thread))
        return float(task)


class AsyncAgent(SyncAgent):
    """The same agent with an async rollout."""

    async def rollout(  # type: ignore[override]
        self, task: Any, resources: agl.Resources, rollout: agl.AttemptedRollout
    ) -> float:
        return super().rollout(task, resources, rollout)


@pytest.mark.parametrize("agent_class", [SyncAgent, AsyncAgent])
async def test_class_based_agent_runs_with_the_rollouts_resources(
    db: agl.SqliteStore, agent_class: type[SyncAgent]
) -> None:
    agent = agent_class()
    v1 = await db.add_resources(V1)
    rollouts = await db.enqueue_many_rollouts(
        [agl.RolloutRequest(input=i, resources_id=v1.resources_id) for i in range(3)]
    )
    async with running(agent, db):
        done = await finished(db, rollouts)
    assert [r.status for r in done] == [RolloutStatus.SUCCEEDED] * 3
    assert sorted(agent.seen) == [
        (i, v1.resources_id, r.rollout_id, agent_class is AsyncAgent) for i, r in enumerate(rollouts)
    ]
    for i, rollout in enumerate(rollouts):
        assert final_reward(await db.query_spans(rollout.rollout_id, "latest")) == float(i)


def no_task() -> float:
    return 1.0


def unknown_parameter(task: Any, temperature: float) -> float:
    return 1.0


def extra_keywords(task: Any, llm: agl.LLM, **kwargs: Any) -> float:
    return 1.0


def task_keyword_only(*, task: Any) -> float:
    return 1.0


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (no_task, r"no_task\(\) must take the task as its first argument"),
        (unknown_parameter, r"unknown_parameter\(\) has parameters \['temperature'\] that the runner cannot fill"),
        (extra_keywords, r"\['kwargs'\] that the runner cannot fill; after the task it may take any of"),
        (task_keyword_only, r"task_keyword_only\(\) must take the task as its first argument"),
    ],
)
def test_bad_agent_signature_fails_at_decoration(fn: Callable[..., Any], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        agl.rollout(fn)


async def test_runner_stops_after_max_rollouts_or_once_the_queue_stays_empty(db: agl.SqliteStore) -> None:
    @agl.rollout
    async def agent(task: int) -> float:
        return float(task)

    rollouts = await db.enqueue_many_rollouts([agl.RolloutRequest(input=i) for i in range(10)])
    runner = agl.Runner(agent, db, poll_interval=0.05)
    try:
        assert await asyncio.wait_for(runner.run(max_rollouts=4), PATIENCE) == 4
        assert (await db.statistics()).queue_length == 6
        # The rest, then nothing more for idle_timeout seconds: the runner returns by itself.
        assert await asyncio.wait_for(runner.run(idle_timeout=0.2), PATIENCE) == 10
    finally:
        runner.close()
    done = await finished(db, rollouts)
    assert [r.status for r in done] == [RolloutStatus.SUCCEEDED] * 10
    assert [a.worker_id for r in done for a in await db.query_attempts(r.rollout_id)] == [runner.worker_id] * 10
