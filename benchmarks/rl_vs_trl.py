"""One GRPO step of TRL's GRPOTrainer next to one LightningRL iteration, same model, prompts and batch, on CPU.

    python benchmarks/rl_vs_trl.py [--steps 3] [--warmup 1] [--precisions fp32,bf16] [--trl-defaults]
                                   [--skip-trl] [--skip-ours] [--no-skip-equal-run]

The workload (``WORKLOAD``, shared by both sides): SmolLM2-135M-Instruct with float32 weights on the CPU, full fine-tuning,
8 prompts x 4 samples = 32 sequences per optimizer step, single-turn chat "What is A + B?" (A, B in 1..20, drawn
with a fixed seed, no system message), at most 24 completion tokens at temperature 1.0, reward 1.0 when the first
integer of the completion is A + B (``first_integer_reward``, the same function on both sides), learning rate
1e-6, no KL term (beta = 0), token-mean loss, gradient norm clipped at 1.0, micro-batches of 8 sequences.

Each side runs ``--warmup`` untimed steps, then ``--steps`` measured ones; the figures are medians of those.

TRL: ``GRPOTrainer`` from trl 1.16 in its own venv (``benchmarks/.venv-trl``, created here if missing, pins in
``TRL_REQUIREMENTS``), run by ``benchmarks/_trl_side.py`` on the Hugging Face folder our engine converts the GGUF
model into (``hf_model_folder``). A step is timed by a TrainerCallback from ``on_step_begin`` to ``on_step_end``:
batched ``model.generate`` of the 32 sequences, rewards, forward/backward of 4 micro-batches, the AdamW step.
Its gradient checkpointing (on by default in TRL 1.16) is turned off, as on our side.

Equal work, once per precision of ``--precisions``: ``fp32`` (TRL ``bf16=False``, ours ``precision="fp32"``)
and ``bf16`` mixed precision (TRL ``bf16=True``: accelerate's bfloat16 autocast, float32 master weights; ours
``precision="bf16"``: bfloat16 autocast in the step and in the engine's generation, float32 master weights).
The default is ``fp32,bf16`` on a CPU that computes bfloat16 natively (AVX-512 BF16 or AMX), else ``fp32`` alone:
without them bfloat16 is emulated and several times slower than float32 on both sides (a SmolLM2-135M prefill of
32x40 tokens took 25-34 s against 3.5 s on an AVX2-only CPU). ``--trl-defaults`` also runs TRL with its defaults
(gradient checkpointing and bf16 both on), as a TRL user gets it.

Ours: ``LightningRL`` with a ``TransformersEngine`` serving the same model through the gateway; the agent is an
``@agl.rollout`` function calling the LLM resource with one shared ``openai.AsyncOpenAI`` client
(``with_options(base_url=...)`` per rollout); 32 rollouts at once
(``max_concurrency=32``). An iteration (``IterationRecord.seconds``) is: enqueue 32 rollouts, every agent's HTTP
call through the gateway to the engine (which batches concurrent requests), spans read back, advantages, the
training step.
``skip_equal_groups=False`` so that, like TRL, every iteration trains all 32 sequences; a second run with the
default ``skip_equal_groups=True`` (groups whose 4 rewards are all equal train nothing, in the first of
``--precisions``) is reported apart. Our runs share one engine, so each starts from the weights the previous one
left (4 steps at learning rate 1e-6: a negligible change). For our columns the table also gives the mean
importance ratio and clip fraction of the measured steps (each step's ratios are taken before its update, so
they show how far the engine's sampling arithmetic is from the step's); TRL's column gives its logged
``clip_ratio/region_mean``.

Step throughput = sequences generated per step / seconds per step (generation included); the issue's goal is
ours >= 2x TRL's. This untrained model nearly always restates the question first ("13 + 14 = 27"), so the reward
is nearly always 0: with skip_equal_groups=True almost every group is skipped, and that run measures mostly
generation. A default fp32 run takes about 4-5 minutes on an idle 2-core machine (4 + 4 + 3 steps of 10-30 s);
each more precision adds 8 steps. Nothing here touches the network except pip, once, while creating TRL's venv (PyPI only);
HF_HUB_OFFLINE and friends are set for both sides.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import random
import re
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VENV = ROOT / "benchmarks" / ".venv-trl"
TRL_SIDE = Path(__file__).resolve().parent / "_trl_side.py"
MODEL = "smollm2-135m"
# transformers pinned to the version our venv runs, so both sides use the same modelling code; torch to the local
# CPU build (constraints.txt), never a CUDA download.
TRL_REQUIREMENTS = ("trl==1.16.0", "transformers==5.24.0", "accelerate==1.15.0", "datasets==5.2.0", "torch==2.13.0")

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "WANDB_DISABLED": "true",
    "WANDB_MODE": "disabled",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


@dataclass(frozen=True)
class Workload:
    """What one step is, on both sides."""

    prompts_per_step: int = 8
    group_size: int = 4
    max_completion_tokens: int = 24
    temperature: float = 1.0
    learning_rate: float = 1e-6
    max_grad_norm: float = 1.0
    micro_batch_size: int = 8
    task_count: int = 64
    seed: int = 0

    @property
    def sequences(self) -> int:
        """Sequences generated (and, without skipping, trained) per optimizer step."""
        return self.prompts_per_step * self.group_size


WORKLOAD = Workload()
_INTEGER = re.compile(r"-?\d+")


def make_tasks(workload: Workload) -> list[dict[str, Any]]:
    """``task_count`` questions "What is A + B?" with A, B drawn from 1..20 by ``seed``."""
    rng = random.Random(workload.seed)
    tasks = []
    for _ in range(workload.task_count):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        tasks.append({"question": f"What is {a} + {b}?", "answer": a + b})
    return tasks


def first_integer_reward(text: str, answer: int) -> float:
    """1.0 when the first integer written in ``text`` is ``answer``, else 0.0."""
    match = _INTEGER.search(text)
    return 1.0 if match is not None and int(match.group()) == answer else 0.0


# --- TRL ------------------------------------------------------------------------------------------------------


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def trl_installed(venv: Path) -> bool:
    python = venv_python(venv)
    if not python.exists():
        return False
    pins = dict(r.split("==") for r in TRL_REQUIREMENTS)
    probe = (
        "import json, trl; from importlib.metadata import version; "
        f"print(json.dumps({{p: version(p) for p in {sorted(pins)!r}}}))"
    )
    result = subprocess.run(
        [str(python), "-c", probe], env={**os.environ, **OFFLINE_ENV}, capture_output=True, text=True
    )
    if result.returncode != 0:
        return False
    found = json.loads(result.stdout.strip().splitlines()[-1])
    return all(found[p].split("+")[0] == v for p, v in pins.items())


def ensure_venv(venv: Path) -> None:
    """Create ``venv`` with ``TRL_REQUIREMENTS`` unless it is there already."""
    if trl_installed(venv):
        return
    print(f"creating {venv} with {' '.join(TRL_REQUIREMENTS)} ...", flush=True)
    if not venv_python(venv).exists():
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    pip = [str(venv_python(venv)), "-m", "pip", "install", "--quiet", "-c", str(ROOT / "constraints.txt")]
    subprocess.run([*pip, *TRL_REQUIREMENTS], check=True)
    if not trl_installed(venv):
        raise SystemExit(f"{' '.join(TRL_REQUIREMENTS)} did not install into {venv}")


def model_folder() -> Path:
    """The Hugging Face folder of ``MODEL`` (converted from its GGUF once, then cached)."""
    from agentlightning_engine.model_folder import hf_model_folder

    return hf_model_folder(MODEL)


def run_trl(tasks: list[dict[str, Any]], args: argparse.Namespace, precision: str) -> dict[str, Any]:
    """Train GRPOTrainer for warm-up + measured steps in TRL's venv; its per-step records. ``precision``:
    ``"fp32"``, ``"bf16"`` (both without gradient checkpointing) or ``"defaults"`` (TRL's own)."""
    spec = {
        "model_folder": str(model_folder()),
        "tasks": tasks,
        "workload": dataclasses.asdict(WORKLOAD),
        "warmup": args.warmup,
        "steps": args.steps,
        "precision": precision,
    }
    with tempfile.TemporaryDirectory(prefix="rl-vs-trl-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        log_path = Path(tmp) / "trl.log"
        env = {**os.environ, **OFFLINE_ENV, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}
        env.pop("PYTHONPATH", None)
        result: dict[str, Any] | None = None
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [str(venv_python(args.venv)), str(TRL_SIDE), str(spec_path)],
                env=env,
                cwd=tmp,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                kind, _, payload = line.partition(" ")
                if kind == "TRL_STEP":
                    step = json.loads(payload)
                    print(f"  TRL     {_step_line(step)}", flush=True)
                elif kind == "TRL_RESULT":
                    result = json.loads(payload)
            code = proc.wait()
        if code != 0 or result is None:
            raise SystemExit(f"TRL's side exited {code}; its log ends:\n{log_path.read_text()[-6000:]}")
    return result


# --- ours -----------------------------------------------------------------------------------------------------


def run_ours(
    tasks: list[dict[str, Any]], iterations: int, skip_equal_groups: bool, engine: Any, precision: str
) -> list[dict[str, Any]]:
    """``iterations`` LightningRL iterations on ``engine`` in ``precision``; one record per iteration."""
    import openai
    from agentlightning_rl import LightningRL, LightningRLConfig

    import agentlightning as agl

    # One client for every rollout, each call on its rollout's URL (with_options shares the HTTP connection pool).
    # A new AsyncOpenAI per rollout would load the TLS certificates each time (~0.1 s of CPU holding the GIL), and
    # the 32 requests would reach the engine one by one instead of together.
    clients: list[Any] = []

    @agl.rollout
    async def sum_agent(task: dict[str, Any], llm: agl.LLM) -> float:
        """Ask the question once; the reward is 1.0 when the first integer of the answer is right."""
        if not clients:
            clients.append(openai.AsyncOpenAI(api_key="unused", max_retries=0))
        client = clients[0].with_options(base_url=llm.base_url)
        reply = await client.chat.completions.create(
            model=llm.model,
            messages=[{"role": "user", "content": task["question"]}],
            max_tokens=WORKLOAD.max_completion_tokens,
            temperature=WORKLOAD.temperature,
        )
        return first_integer_reward(reply.choices[0].message.content or "", task["answer"])

    config = LightningRLConfig(
        iterations=iterations,
        tasks_per_iteration=WORKLOAD.prompts_per_step,
        group_size=WORKLOAD.group_size,
        validate_every=0,
        checkpoint_every=0,
        seed=WORKLOAD.seed,
        skip_equal_groups=skip_equal_groups,
        kl_coef=0.0,
        loss_aggregation="token",
        learning_rate=WORKLOAD.learning_rate,
        max_grad_norm=WORKLOAD.max_grad_norm,
        micro_batch_size=WORKLOAD.micro_batch_size,
        precision=precision,  # type: ignore[arg-type]
    )
    sampling = {"temperature": WORKLOAD.temperature, "max_tokens": WORKLOAD.max_completion_tokens}
    rl = LightningRL(engine, config, sampling=sampling, progress=False)
    trainer = agl.Trainer(algorithm=rl, store=agl.InMemoryStore(), max_concurrency=WORKLOAD.sequences)
    result = trainer.fit(sum_agent, tasks)
    # The client belongs to the finished run's event loop: collect it now, while no loop runs. Collected inside the
    # next run's loop, it would try to close its connections there (an "Event loop is closed" traceback).
    clients.clear()
    gc.collect()
    records = []
    for record in result.history:
        records.append(
            {
                "step": record.iteration,
                "seconds": record.seconds,
                "rollout_seconds": record.rollout_seconds,
                "train_seconds": record.train_seconds,
                "completion_tokens": record.completion_tokens,
                "sequences": record.rollouts,
                "trained_sequences": record.sequences,
                "trained_tokens": record.trained_tokens,
                "reward_mean": record.reward_mean,
                "loss": record.loss,
                "ratio_mean": record.ratio_mean,
                "clip_fraction": record.clip_fraction,
            }
        )
    return records


# --- report ---------------------------------------------------------------------------------------------------


def _step_line(step: dict[str, Any]) -> str:
    generation = step.get("generate_and_score_seconds", step.get("rollout_seconds", 0.0))
    tag = " (warm-up)" if step.get("warmup") else ""
    return (
        f"step {step['step']}: {step['seconds']:.2f} s (generation {generation:.2f} s, "
        f"training {step['train_seconds']:.2f} s), {step['completion_tokens']} completion tokens, "
        f"reward {step.get('reward_mean', float('nan')):.2f}{tag}"
    )


def summarize(records: list[dict[str, Any]], generation_key: str) -> dict[str, float]:
    """Medians over the measured steps, and throughputs of the median step."""

    def median(key: str) -> float:
        return statistics.median(float(r[key]) for r in records)

    def mean_of_known(key: str) -> float:
        known = [float(r[key]) for r in records if r.get(key) is not None]
        return statistics.mean(known) if known else float("nan")

    seconds = median("seconds")
    summary = {
        "seconds": seconds,
        "generation_seconds": median(generation_key),
        "train_seconds": median("train_seconds"),
        "completion_tokens": median("completion_tokens"),
        "sequences": median("sequences"),
        "trained_sequences": median("trained_sequences" if "trained_sequences" in records[0] else "sequences"),
        "reward_mean": statistics.mean(float(r.get("reward_mean") or 0.0) for r in records),
        "ratio_mean": mean_of_known("ratio_mean"),
        "clip_fraction": mean_of_known("clip_fraction"),
    }
    summary["sequences_per_second"] = summary["sequences"] / seconds
    summary["tokens_per_second"] = statistics.median(r["completion_tokens"] / r["seconds"] for r in records)
    return summary


def print_table(columns: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    rows = [
        ("seconds per step (median)", "seconds", "{:.2f}"),
        ("  generation / rollouts (s)", "generation_seconds", "{:.2f}"),
        ("  training (s)", "train_seconds", "{:.2f}"),
        ("sequences generated per step", "sequences", "{:.0f}"),
        ("sequences trained per step", "trained_sequences", "{:.0f}"),
        ("completion tokens per step", "completion_tokens", "{:.0f}"),
        ("step throughput (sequences/s)", "sequences_per_second", "{:.3f}"),
        ("completion tokens/s of step", "tokens_per_second", "{:.1f}"),
        ("mean reward", "reward_mean", "{:.3f}"),
        ("mean importance ratio", "ratio_mean", "{:.4f}"),
        ("clip fraction", "clip_fraction", "{:.4f}"),
    ]
    width = 18
    header = f"{'':32s}" + "".join(f"{name:>{width}s}" for name in columns)
    print()
    print(
        f"{WORKLOAD.prompts_per_step} prompts x {WORKLOAD.group_size} samples = {WORKLOAD.sequences} sequences/step, "
        f"<= {WORKLOAD.max_completion_tokens} completion tokens, SmolLM2-135M-Instruct (float32 weights) on CPU "
        f"({os.cpu_count()} cores, native bf16: {'yes' if _native_bf16() else 'no'}), medians of {args.steps} steps "
        f"after {args.warmup} warm-up"
    )
    print(header)
    print("-" * len(header))
    for label, key, fmt in rows:
        cells = ("-" if math.isnan(c[key]) else fmt.format(c[key]) for c in columns.values())
        print(f"{label:32s}" + "".join(f"{cell:>{width}s}" for cell in cells))
    print()
    for precision in args.precisions:
        ours, trl = columns.get(f"ours {precision}"), columns.get(f"TRL {precision}")
        if ours is not None and trl is not None:
            ratio = ours["sequences_per_second"] / trl["sequences_per_second"]
            print(f"ours {precision} / TRL {precision} step throughput (equal work): {ratio:.2f}x (goal: >= 2x)")
    defaults = columns.get("TRL defaults")
    if defaults is not None:
        for name, column in columns.items():
            if name.startswith("ours"):
                ratio = column["sequences_per_second"] / defaults["sequences_per_second"]
                print(f"{name} / TRL with its defaults (gradient checkpointing, bf16): {ratio:.2f}x")
    skipping = columns.get("ours skip-equal")
    if skipping is not None and skipping["trained_sequences"] < skipping["sequences"]:
        print(
            "(skip-equal: groups whose rewards are all equal train nothing, so its step time depends on the rewards' "
            "spread as much as on speed)"
        )


def _native_bf16() -> bool:
    import torch

    return any(
        bool(getattr(torch.cpu, probe, lambda: False)())
        for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )


def _precisions(text: str | None) -> list[str]:
    if text is None:
        return ["fp32", "bf16"] if _native_bf16() else ["fp32"]
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    unknown = sorted(set(chosen) - {"fp32", "bf16"})
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"--precisions takes fp32 and/or bf16, comma-separated; got {text!r}")
    return list(dict.fromkeys(chosen))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="measured steps per side (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them (default: %(default)s)")
    parser.add_argument(
        "--precisions",
        default=None,
        help="equal-work comparisons to run, comma-separated fp32 and/or bf16 (default: fp32,bf16 on a CPU with "
        "native bfloat16, else fp32)",
    )
    parser.add_argument("--skip-trl", action="store_true", help="do not run TRL's side")
    parser.add_argument("--skip-ours", action="store_true", help="do not run LightningRL's side")
    parser.add_argument(
        "--no-skip-equal-run",
        action="store_true",
        help="leave out the LightningRL run with the default skip_equal_groups=True",
    )
    parser.add_argument(
        "--trl-defaults",
        action="store_true",
        help="also run TRL with its defaults: gradient checkpointing on (it recomputes the forward pass) and bf16",
    )
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="venv for TRL (created if missing)")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")
    try:
        args.precisions = _precisions(args.precisions)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    os.environ.update(OFFLINE_ENV)
    if "bf16" in args.precisions and not _native_bf16():
        print(
            "note: this CPU has no native bfloat16 (AVX-512 BF16 or AMX): bf16 is emulated, on both sides", flush=True
        )
    tasks = make_tasks(WORKLOAD)
    started = time.perf_counter()
    columns: dict[str, dict[str, float]] = {}
    trl_results: dict[str, dict[str, Any]] = {}

    if not args.skip_trl:
        ensure_venv(args.venv)
        runs = [*args.precisions, *(["defaults"] if args.trl_defaults else [])]
        for precision in runs:
            what = "its defaults (gradient checkpointing, bf16)" if precision == "defaults" else precision
            print(f"TRL GRPOTrainer, {what} ...", flush=True)
            trl_results[precision] = run_trl(tasks, args, precision)
            steps = trl_results[precision]["steps"][args.warmup :]
            columns[f"TRL {precision}"] = summarize(steps, "generate_and_score_seconds")

    if not args.skip_ours:
        from agentlightning_engine import TransformersEngine

        # The very files TRL loads (the GGUF converted once), and faster to load than dequantizing the GGUF again.
        engine = TransformersEngine(str(model_folder()), served_model_name=MODEL)
        try:
            for precision in args.precisions:
                print(f"LightningRL, {precision} ...", flush=True)
                records = run_ours(
                    tasks, args.warmup + args.steps, skip_equal_groups=False, engine=engine, precision=precision
                )
                for record in records:
                    print(f"  ours    {_step_line({**record, 'warmup': record['step'] <= args.warmup})}", flush=True)
                columns[f"ours {precision}"] = summarize(records[args.warmup :], "rollout_seconds")
            if not args.no_skip_equal_run:
                # The engine is warm by now: no warm-up iteration.
                precision = args.precisions[0]
                print(f"LightningRL, {precision}, skip_equal_groups=True ...", flush=True)
                records = run_ours(tasks, args.steps, skip_equal_groups=True, engine=engine, precision=precision)
                for record in records:
                    print(f"  ours    {_step_line(record)} (trained {record['trained_sequences']})", flush=True)
                columns["ours skip-equal"] = summarize(records, "rollout_seconds")
            stats = engine.statistics
            # How the 32 concurrent requests met the engine: each batch and each join runs a prefill of its own, of
            # the prompts not prefilled already for another sequence.
            print(
                f"  engine: {stats.batches} batches for {stats.sequences} sequences, {stats.joined} joined a running "
                f"batch, at most {stats.largest_batch} rows at once, {stats.prompts_reused} started from a prompt "
                "prefilled for another",
                flush=True,
            )
        finally:
            engine.close()

    for precision, trl_result in trl_results.items():
        versions = ", ".join(f"{k} {v}" for k, v in trl_result["versions"].items())
        config = ", ".join(f"{k}={v}" for k, v in trl_result["config"].items())
        print(f"\nTRL {precision}: {versions}; torch threads {trl_result['threads']}")
        print(f"  GRPOConfig: {config}")
        print(f"  model load {trl_result['load_seconds']:.1f} s, trainer set-up {trl_result['setup_seconds']:.1f} s")
        logged = [s.get("trl_step_time") for s in trl_result["steps"]]
        print(f"  TRL's own logged step_time per step (s): {', '.join(f'{t:.2f}' for t in logged if t is not None)}")
    if columns:
        print_table(columns, args)
    print(f"\nwhole run: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
