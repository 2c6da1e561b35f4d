"""Quick-start: a plain-Python agent run over a dataset by `agl.Trainer.dev`, every step recorded in SQLite.

    python examples/quickstart/quickstart.py          # writes quickstart.db in the current folder
    agl runs list --store sqlite:///quickstart.db     # look again later
    agl runs show <rollout id> --store sqlite:///quickstart.db

The agent (no LLM yet) reads its prompt template from the published resources, "plans" with a
calculator tool inside `agl.operation` spans, and returns a reward: 1.0 for the right answer. It is
sloppy on purpose, so rewards differ, and its tool raises on one kind of question, so you can see a
failed rollout with the exception span that says why. The next steps of the project put a real LLM
behind it and train it.
"""

from __future__ import annotations

import argparse
import operator
import random
from pathlib import Path

import agentlightning as agl
from agentlightning.cli import main as agl_cli

OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
QUESTIONS = [(2, "+", 3), (7, "*", 5), (12, "-", 30), (9, "+", 9), (40, "/", 0), (13, "*", 8)]
DATASET = [
    agl.Task(id=f"q{i}", input={"question": f"{a} {op} {b}", "answer": OPERATORS[op](a, b) if b or op != "/" else None})
    for i, (a, op, b) in enumerate(QUESTIONS)
]


@agl.operation
def calculator(a: float, op: str, b: float) -> float:
    """A tool. Division by zero raises, as real tools do."""
    if op == "/" and b == 0:
        raise ZeroDivisionError(f"cannot divide {a:g} by zero")
    return float(OPERATORS[op](a, b))


@agl.rollout
def arithmetic_agent(task: dict[str, object], prompt_template: agl.PromptTemplate) -> float:
    """Answer an arithmetic question; the reward is 1.0 when the answer is right."""
    prompt = prompt_template.format(question=task["question"])
    agl.emit_message(prompt)
    a, op, b = str(task["question"]).split()
    result = calculator(float(a), op, float(b))
    if random.random() < 0.3:  # the agent sometimes copies the result wrong: something to train away
        result += random.choice([-1, 1])
    agl.emit_annotation({"answer": result})
    return 1.0 if result == task["answer"] else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="quickstart.db", help="SQLite file to write (default: %(default)s)")
    parser.add_argument("--n", type=int, default=4, help="rollouts per task (default: %(default)s)")
    args = parser.parse_args()
    random.seed(0)
    db = Path(args.db).resolve()

    trainer = agl.Trainer(
        store=agl.SqliteStore(db),
        initial_resources={"prompt_template": agl.PromptTemplate(template="Compute {question}. Answer with a number.")},
    )
    result = trainer.dev(arithmetic_agent, DATASET, n=args.n)

    agl_cli(["runs", "list", "--store", f"sqlite:///{db}", "--limit", str(len(result.rollouts))])
    failed = [rollout for rollout, _ in result.rollouts if rollout.status == agl.RolloutStatus.FAILED]
    mean = result.mean_reward
    print(
        f"\n{len(result.rollouts)} rollouts: {result.succeeded} succeeded, {len(failed)} failed; mean reward {mean:.2f}"
        if mean is not None
        else "no rewards"
    )
    if failed:
        print(f"\nWhy {failed[0].rollout_id} failed:")
        agl_cli(["runs", "show", failed[0].rollout_id, "--store", f"sqlite:///{db}"])
    print(f"\nThe store is {trainer.store_location}. Look again with: agl runs list --store sqlite:///{db}")


if __name__ == "__main__":
    main()
