"""The trainer: runs an algorithm and the runners that execute its rollouts, in one process or several."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentlightning.agent import LitAgent
from agentlightning.algorithm.base import Algorithm, AlgorithmContext, Dataset
from agentlightning.algorithm.baseline import Baseline
from agentlightning.runner import Runner
from agentlightning.store.base import LightningStore
from agentlightning.types import AnyResource, RolloutConfig

__all__ = ["Trainer"]

log = logging.getLogger("agentlightning.trainer")


def _runner_process(agent: LitAgent, url: str, token: str | None, max_concurrency: int | None, worker_id: str) -> None:
    """Entry point of a runner process: run until the trainer terminates it."""
    from agentlightning.store.client import StoreClient

    async def main() -> None:
        store = StoreClient(url, token=token)
        runner = Runner(agent, store, max_concurrency=max_concurrency, worker_id=worker_id)
        try:
            await runner.run()
        finally:
            runner.close()
            await store.close()

    asyncio.run(main())


class Trainer:
    """Runs ``algorithm`` against ``store`` while ``n_runners`` runners execute its rollouts.

    - ``processes=False`` (default): everything in this process; each runner is a task running up to
      ``max_concurrency`` rollouts at once (async agents) or one at a time in a thread (sync agents).
    - ``processes=True``: the trainer serves ``store`` over HTTP on 127.0.0.1 and starts ``n_runners``
      runner processes against it (the agent must be picklable: a module-level ``@agl.rollout``
      function or ``LitAgent`` instance). Runners on other machines can join with
      ``agl runner --store http://HOST:PORT --agent module:attr``.

    ``store`` defaults to ``agl.SqliteStore("runs.db")``.
    """

    def __init__(
        self,
        *,
        algorithm: Algorithm | None = None,
        store: LightningStore | None = None,
        n_runners: int = 1,
        processes: bool = False,
        max_concurrency: int | None = None,
        initial_resources: Mapping[str, AnyResource] | None = None,
        adapter: Any = None,
        rollout_config: RolloutConfig | None = None,
    ) -> None:
        if n_runners < 1:
            raise ValueError(f"n_runners must be at least 1, not {n_runners}")
        self.algorithm = algorithm
        self.n_runners = n_runners
        self.processes = processes
        self.max_concurrency = max_concurrency
        self.initial_resources = dict(initial_resources or {})
        self.adapter = adapter
        self.rollout_config = rollout_config
        self._store = store

    @property
    def store(self) -> LightningStore:
        """The store (``runs.db`` in the working folder unless one was given)."""
        if self._store is None:
            from agentlightning.store.sqlite import SqliteStore

            self._store = SqliteStore("runs.db")
        return self._store

    @property
    def store_location(self) -> str:
        """Where the runs are kept, for people: a file path or a URL."""
        store = self.store
        path = getattr(store, "path", None)
        if path and path != ":memory:":
            return str(Path(path).resolve())
        return getattr(store, "url", None) or type(store).__name__

    def fit(self, agent: LitAgent, train_dataset: Dataset | None = None, val_dataset: Dataset | None = None) -> Any:
        """Run the algorithm over the datasets with runners executing ``agent``; returns the algorithm's result."""
        if self.algorithm is None:
            raise ValueError("Trainer.fit needs an algorithm (Trainer(algorithm=...)); Trainer.dev runs the baseline.")
        return asyncio.run(self.afit(agent, train_dataset, val_dataset))

    def dev(self, agent: LitAgent, dataset: Dataset, *, n: int = 1) -> Any:
        """Run the agent ``n`` times on every task with the initial resources (``agl.Baseline``); returns the rewards."""
        return asyncio.run(self._run(Baseline(n=n), agent, dataset, None))

    async def afit(
        self, agent: LitAgent, train_dataset: Dataset | None = None, val_dataset: Dataset | None = None
    ) -> Any:
        """:meth:`fit` for callers already in an event loop."""
        if self.algorithm is None:
            raise ValueError("Trainer.fit needs an algorithm (Trainer(algorithm=...)).")
        return await self._run(self.algorithm, agent, train_dataset, val_dataset)

    async def _run(self, algorithm: Algorithm, agent: LitAgent, train: Dataset | None, val: Dataset | None) -> Any:
        if not isinstance(agent, LitAgent):
            raise TypeError(
                f"The agent must be an agl.LitAgent or an @agl.rollout function, not {type(agent).__name__}"
            )
        algorithm.context = AlgorithmContext(
            store=self.store,
            adapter=self.adapter,
            initial_resources=self.initial_resources,
            rollout_config=self.rollout_config,
        )
        if self.processes:
            return await self._run_with_processes(algorithm, agent, train, val)
        stop = asyncio.Event()
        runners = [
            Runner(agent, self.store, max_concurrency=self.max_concurrency, worker_id=f"runner-{i}")
            for i in range(self.n_runners)
        ]
        tasks = [asyncio.create_task(r.run(stop=stop)) for r in runners]
        try:
            return await algorithm.run(train, val)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            for runner in runners:
                runner.close()

    async def _run_with_processes(
        self, algorithm: Algorithm, agent: LitAgent, train: Dataset | None, val: Dataset | None
    ) -> Any:
        from agentlightning.server.serve import StoreServer

        try:
            pickle.dumps(agent)
        except Exception as exc:
            raise TypeError(
                f"processes=True sends the agent to runner processes, but it cannot be pickled ({exc}); "
                "define it at module level, or run with processes=False."
            ) from exc
        server = StoreServer(self.store, port=0).start()
        context = multiprocessing.get_context("spawn")
        children = [
            context.Process(
                target=_runner_process,
                args=(agent, server.url, None, self.max_concurrency, f"runner-{i}"),
                name=f"agentlightning-runner-{i}",
                daemon=True,
            )
            for i in range(self.n_runners)
        ]
        for child in children:
            child.start()
        try:
            return await algorithm.run(train, val)
        finally:
            for child in children:
                child.terminate()
            for child in children:
                child.join(timeout=10)
            server.stop()
