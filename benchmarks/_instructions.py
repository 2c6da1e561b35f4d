"""How the instruction-count benchmarks measure: each case's agent runs in a process of its own under valgrind's
instruction counter (cachegrind, no cache simulation), once with ``runs`` runs and once with none; the difference
over ``runs`` is the instructions of one run, whatever the process spent starting. Every thread counts (the agent's,
the tracer's writer, the store's database thread).

Instructions are not time (they leave out cache misses, thread hand-offs and the machine's own speed), but two
measurements agree to well under 1 % of a case where timed rounds on a shared virtual machine scatter by ±10 %:
the figure to compare two versions of the code by. Import both versions the same way: each from a worktree through
``PYTHONPATH`` (``git worktree add /tmp/old <rev>``, ``git worktree add /tmp/new HEAD``,
``PYTHONPATH=/tmp/old/core/src``). The same code counted ~47 k instructions more per LangChain agent run imported
through a virtualenv's editable install of the main checkout than through ``PYTHONPATH`` from a worktree, and 17 k
more through ``PYTHONPATH`` from the main checkout than from a worktree: how and whence it is imported moves a count.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def instructions(script: str, child_args: Sequence[str]) -> int:
    """Instructions executed by ``python script *child_args`` (a measured child process) under valgrind."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            script,
            *child_args,
        ],
        capture_output=True,
        text=True,
        # One string hash seed for every child: with Python's per-process random one, the layout of dicts and sets
        # moves a process's count by ~2 M instructions; fixed, by ~0.2 M.
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"valgrind run of {' '.join(child_args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return int(found.group(1).replace(",", ""))


def require_valgrind() -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt install valgrind); it counts the instructions reported.")


def per_run(script: str, case: str, runs: int, extra: Sequence[str] = ()) -> float:
    """Instructions of one run of ``case``: a child with ``runs`` runs less one with none, run side by side."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        with_runs, without = pool.map(
            lambda n: instructions(script, ["--child", case, "--runs", str(n), *extra]), (runs, 0)
        )
    return (with_runs - without) / runs


def report(title: str, script: str, cases: dict[str, str], runs: int, extra: Sequence[str] = ()) -> None:
    """Measure and print ``cases`` (``none``, ``nothing``, ``lightning`` -> label) and what the integration adds
    over the do-nothing stand-in and over none, as a share of the integration's run."""
    print(title, flush=True)
    got: dict[str, float] = {}
    for case, label in cases.items():
        got[case] = per_run(script, case, runs, extra)
        print(f"  {label:28s} {got[case] / 1e6:8.3f} M instructions per run", flush=True)
    ours = got["lightning"]
    for base, over in (("nothing", "over the do-nothing one"), ("none", "over none")):
        added = ours - got[base]
        print(f"  it adds {added / 1e3:8.0f} k instructions per run {over}, {added / ours * 100:.1f} % of the run")


def main(doc: str | None, script: str, cases: dict[str, str], runs: dict[str, str], child: Callable[..., None]) -> None:
    """A benchmark's command line: ``--runs N`` measures each of ``runs`` (name -> title) for every case; the
    measured children call ``child(case, runs, name)``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=40, help="agent runs per measured process (default: %(default)s)")
    parser.add_argument("--child", choices=list(cases), help=argparse.SUPPRESS)
    parser.add_argument("--which", choices=list(runs), default=next(iter(runs)), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.runs, args.which)
        return
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    require_valgrind()
    for which, title in runs.items():
        report(title, script, cases, args.runs, ["--which", which])


def run_recorded(run: Callable[[], Any], runs: int) -> None:
    """What a measured child does: inside an active rollout (a Tracer over an in-memory store, writing at its flushes
    only), 3 warm-up runs (first calls fill caches, in every process alike), their spans written, then ``runs`` runs
    and their spans. ``run`` makes one agent run (a coroutine function, or a plain one)."""
    import agentlightning as agl
    from agentlightning.tracer import Tracer

    async def main() -> None:
        store = agl.InMemoryStore()
        tracer = Tracer(store, flush_interval=3600, batch_size=1 << 30)
        rollout = await store.start_rollout(agl.RolloutRequest(input="bench"))
        async with tracer.trace(rollout.rollout_id, rollout.attempt.attempt_id):
            for count in (3, runs):
                for _ in range(count):
                    done = run()
                    if inspect.isawaitable(done):
                        await done
                await tracer.flush()
        tracer.close()
        await store.close()

    asyncio.run(main())
