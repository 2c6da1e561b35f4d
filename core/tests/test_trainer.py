"""The trainer, as a user relies on it: ``dev`` reports the agent's rewards, runners share the work in one process
or in several, and a custom algorithm drives publish → enqueue → wait → read spans.

The stores are real SQLite files; runner processes reach theirs through a store server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import pickle
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from agents_for_tests import doubler, rendezvous_agent

import agentlightning as agl
from agentlightning import AttemptStatus, RolloutMode, RolloutStatus, semconv
from agentlightning.reward import final_reward

# Upper bound of every wait below; generous so a loaded 2-core machine does not flake.
PATIENCE = 20.0


def worker_ids(store: agl.LightningStore, rollouts: Sequence[agl.Rollout]) -> Counter[str | None]:
    """How many attempts of these rollouts each worker made."""

    async def query() -> list[list[agl.Attempt]]:
        return await asyncio.gather(*(store.query_attempts(r.rollout_id) for r in rollouts))

    return Counter(a.worker_id for attempts in asyncio.run(query()) for a in attempts)


# --- Trainer.dev ---------------------------------------------------------------------------------
def test_dev_runs_the_agent_on_every_task_and_returns_its_rewards(tmp_path: Path) -> None:
    @agl.rollout
    def agent(task: dict[str, int], prompt_template: agl.PromptTemplate) -> float:
        agl.emit_message(prompt_template.format(x=task["x"]))
        return task["x"] / 10

    path = tmp_path / "runs.db"
    store = agl.SqliteStore(path)
    try:
        trainer = agl.Trainer(
            store=store, initial_resources={"prompt_template": agl.PromptTemplate(template="solve {x}")}
        )
        dataset = [{"x": x} for x in range(5)]
        result = trainer.dev(agent, dataset, n=2)

        assert isinstance(result, agl.BaselineResult)
        assert [(rollout.input, reward) for rollout, reward in result.rollouts] == [
            ({"x": x}, x / 10) for x in range(5) for _ in range(2)
        ]
        assert result.succeeded == 10 and result.mean_reward == pytest.approx(0.2)
        assert trainer.store_location == str(path.resolve())

        # Every rollout is in the store, finished, in train mode, grouped by task, with the spans the agent emitted.
        stored = asyncio.run(store.query_rollouts())
        assert [r.rollout_id for r in stored] == [r.rollout_id for r, _ in result.rollouts]
        assert all(r.status == RolloutStatus.SUCCEEDED and r.mode == RolloutMode.TRAIN for r in stored)
        assert Counter(r.metadata["group_id"] for r in stored) == {f"train-{x}": 2 for x in range(5)}
        spans = asyncio.run(store.query_spans(stored[-1].rollout_id, "latest"))
        (message,) = [s for s in spans if s.name == semconv.SPAN_MESSAGE]
        assert message.attributes[semconv.AGL_MESSAGE_BODY] == "solve 4"
        assert final_reward(spans) == 0.4
    finally:
        asyncio.run(store.close())


def test_dev_reports_no_reward_for_a_failed_rollout_and_runs_the_rest(tmp_path: Path) -> None:
    @agl.rollout
    async def agent(task: int) -> float:
        if task == 2:
            raise ValueError("task 2 is unsolvable")
        return float(task)

    store = agl.SqliteStore(tmp_path / "runs.db")
    try:
        tasks = [agl.Task(id=f"t{i}", input=i) for i in range(4)]
        result = agl.Trainer(store=store).dev(agent, tasks)
        assert [reward for _, reward in result.rollouts] == [0.0, 1.0, None, 3.0]
        assert [r.status for r, _ in result.rollouts] == [RolloutStatus.SUCCEEDED] * 2 + [
            RolloutStatus.FAILED,
            RolloutStatus.SUCCEEDED,
        ]
        assert [r.metadata["task_id"] for r, _ in result.rollouts] == ["t0", "t1", "t2", "t3"]
        assert result.succeeded == 3 and result.mean_reward == pytest.approx(4 / 3)
    finally:
        asyncio.run(store.close())


def test_trainer_keeps_runs_in_runs_db_of_the_working_folder_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    trainer = agl.Trainer()
    try:
        result = trainer.dev(doubler, [1, 2])
        assert [reward for _, reward in result.rollouts] == [2.0, 4.0]
        assert trainer.store_location == str(tmp_path / "runs.db")
        assert (tmp_path / "runs.db").exists()
    finally:
        asyncio.run(trainer.store.close())


# --- several runners -----------------------------------------------------------------------------
def test_three_runners_in_process_share_the_rollouts(tmp_path: Path) -> None:
    @agl.rollout
    def agent(task: int) -> float:  # sync: each runner runs one rollout at a time, in a thread
        return float(task)

    store = agl.SqliteStore(tmp_path / "runs.db")
    try:
        result = agl.Trainer(store=store, n_runners=3).dev(agent, list(range(30)))
        assert [reward for _, reward in result.rollouts] == [float(i) for i in range(30)]
        assert result.succeeded == 30
        # Each runner takes a rollout as soon as it starts, so every one of them did work.
        workers = worker_ids(store, [r for r, _ in result.rollouts])
        assert set(workers) == {"runner-0", "runner-1", "runner-2"} and sum(workers.values()) == 30
    finally:
        asyncio.run(store.close())


def test_runner_processes_complete_every_rollout_and_each_process_does_work(tmp_path: Path) -> None:
    folder = tmp_path / "pids"
    folder.mkdir()
    store = agl.SqliteStore(tmp_path / "runs.db", sweep_interval=0.1)
    try:
        trainer = agl.Trainer(
            store=store,
            n_runners=2,
            processes=True,
            rollout_config=agl.RolloutConfig(timeout_seconds=PATIENCE * 2),
        )
        dataset = [{"folder": str(folder), "processes": 2, "value": i} for i in range(12)]
        result = trainer.dev(rendezvous_agent, dataset)
        assert [reward for _, reward in result.rollouts] == [float(i) for i in range(12)]
        assert result.succeeded == 12
        workers = worker_ids(store, [r for r, _ in result.rollouts])
        assert set(workers) == {"runner-0", "runner-1"} and sum(workers.values()) == 12
        assert len(list(folder.iterdir())) == 2  # two processes, neither of them this one
        assert not (folder / str(os.getpid())).exists()
    finally:
        asyncio.run(store.close())


def test_module_level_agents_can_be_sent_to_runner_processes() -> None:
    # What Trainer(processes=True) sends each runner process: an @agl.rollout function goes by its name, which
    # the process imports; a LitAgent instance as a copy of its class and state.
    assert pickle.loads(pickle.dumps(rendezvous_agent)) is rendezvous_agent
    assert type(pickle.loads(pickle.dumps(doubler))) is type(doubler)


def test_runner_processes_refuse_an_agent_they_cannot_import(tmp_path: Path) -> None:
    @agl.rollout
    async def local_agent(task: Any) -> float:
        return 1.0

    store = agl.SqliteStore(tmp_path / "runs.db")
    try:
        with pytest.raises(TypeError, match=r"cannot be pickled .*define it at module level"):
            agl.Trainer(store=store, processes=True).dev(local_agent, [1])
    finally:
        asyncio.run(store.close())


# --- a custom algorithm --------------------------------------------------------------------------
class PromptSearch(agl.Algorithm):
    """Try each candidate prompt on the training tasks, keep the best by mean reward, then validate it."""

    def __init__(self, candidates: list[str]) -> None:
        self.candidates = candidates

    async def score(self, template: str, dataset: Sequence[Any], mode: RolloutMode) -> list[tuple[str, float | None]]:
        """(prompt the agent rendered, final reward) of each rollout of ``dataset`` under ``template``."""
        resources = await self.publish({"prompt_template": agl.PromptTemplate(template=template)})
        assert resources is not None
        rollouts = await self.enqueue(dataset, mode, resources_id=resources.resources_id)
        finished = await self.wait(rollouts, timeout=PATIENCE)
        assert len(finished) == len(rollouts)
        results = []
        for rollout in finished:
            spans = await self.spans(rollout)
            (prompt,) = [s.attributes[semconv.AGL_MESSAGE_BODY] for s in spans if s.name == semconv.SPAN_MESSAGE]
            results.append((str(prompt), final_reward(spans)))
        return results

    async def run(self, train_dataset: Sequence[Any] | None, val_dataset: Sequence[Any] | None) -> dict[str, Any]:
        assert train_dataset is not None and val_dataset is not None
        means = {}
        for template in self.candidates:
            scored = await self.score(template, train_dataset, RolloutMode.TRAIN)
            means[template] = sum(reward or 0.0 for _, reward in scored) / len(scored)
        best = max(means, key=lambda t: means[t])
        return {"best": best, "means": means, "val": await self.score(best, val_dataset, RolloutMode.VAL)}


def test_custom_algorithm_publishes_enqueues_waits_and_reads_spans(tmp_path: Path) -> None:
    @agl.rollout
    async def agent(task: int, prompt_template: agl.PromptTemplate) -> float:
        prompt = prompt_template.format(n=task)
        agl.emit_message(prompt)
        return (1.0 if "step by step" in prompt else 0.25) * task

    store = agl.SqliteStore(tmp_path / "runs.db")
    try:
        algorithm = PromptSearch(["answer {n}", "think step by step about {n}"])
        with pytest.raises(ValueError, match="needs an algorithm"):
            agl.Trainer(store=store).fit(agent, [1])
        result = agl.Trainer(algorithm=algorithm, store=store, n_runners=2).fit(agent, [1, 2, 3], [10, 20])

        assert result["means"] == {"answer {n}": 0.5, "think step by step about {n}": 2.0}
        assert result["best"] == "think step by step about {n}"
        assert result["val"] == [("think step by step about 10", 10.0), ("think step by step about 20", 20.0)]
        statistics = asyncio.run(store.statistics())
        assert statistics.resources_versions == 3
        assert statistics.rollouts[RolloutStatus.SUCCEEDED] == 3 + 3 + 2
        assert statistics.attempts[AttemptStatus.SUCCEEDED] == 8
        assert len(asyncio.run(store.query_rollouts(mode=RolloutMode.VAL))) == 2
    finally:
        asyncio.run(store.close())
