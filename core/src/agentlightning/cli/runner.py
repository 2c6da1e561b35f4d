"""``agl runner``: run an agent's rollouts from a store server, e.g. on another machine."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from agentlightning.errors import AgentLightningError


def load_agent(spec: str) -> Any:
    """Import ``module:attribute`` (the working folder is importable) and return the agent it names."""
    from agentlightning.agent import LitAgent

    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise AgentLightningError(f"--agent must look like module:attribute (e.g. my_agents:solver), not {spec!r}")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AgentLightningError(f"Cannot import {module_name!r} for --agent: {exc}") from exc
    agent = getattr(module, attribute, None)
    if agent is None:
        raise AgentLightningError(f"Module {module_name!r} has no attribute {attribute!r}")
    if isinstance(agent, type) and issubclass(agent, LitAgent):
        agent = agent()
    if not isinstance(agent, LitAgent):
        raise AgentLightningError(f"{spec} is a {type(agent).__name__}, not an @agl.rollout function or agl.LitAgent")
    return agent


def run(args: argparse.Namespace) -> int:
    """Run rollouts until interrupted (SIGINT / SIGTERM finish the rollouts in flight first)."""
    from agentlightning.runner import Runner
    from agentlightning.store import open_store

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    agent = load_agent(args.agent)

    async def main() -> int:
        store = open_store(args.store, token=args.token)
        runner = Runner(agent, store, max_concurrency=args.concurrency, worker_id=args.worker_id)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(
            f"Runner {runner.worker_id} running {args.agent} on {args.store} ({runner.max_concurrency} at once)",
            flush=True,
        )
        try:
            return await runner.run(stop=stop, max_rollouts=args.max_rollouts)
        finally:
            runner.close()
            await store.close()

    done = asyncio.run(main())
    print(f"Runner finished {done} rollouts.", flush=True)
    return 0
