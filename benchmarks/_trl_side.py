"""TRL's side of benchmarks/rl_vs_trl.py, run by the python of ``benchmarks/.venv-trl`` (TRL, not our packages).

    benchmarks/.venv-trl/bin/python benchmarks/_trl_side.py SPEC.json

SPEC.json (written by rl_vs_trl.py): the Hugging Face model folder, the tasks, the workload, the number of
warm-up and measured steps, and ``precision``: ``"fp32"`` (bf16 and gradient checkpointing off, as on our side),
``"bf16"`` (bf16 mixed precision on, gradient checkpointing off) or ``"defaults"`` (TRL's own defaults: both on). Trains ``GRPOTrainer`` for warm-up + measured optimizer steps and prints, on stdout,
one ``TRL_STEP {json}`` line per step and a final ``TRL_RESULT {json}`` line; everything else goes to stderr.

A step is timed by a ``TrainerCallback`` from ``on_step_begin`` to ``on_step_end`` (generation of the whole
32-sequence batch, rewards, the forward/backward passes of every micro-batch, clipping, the optimizer step).
Inside it, ``GRPOTrainer._generate_and_score_completions`` (generation, rewards, advantages) and
``model.generate`` alone are timed by wrapping the trainer's own methods; the rest of the step is training.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rl_vs_trl import Workload, first_integer_reward  # stdlib only: the very reward our side uses


def emit(kind: str, payload: dict[str, Any]) -> None:
    sys.stdout.write(f"{kind} {json.dumps(payload)}\n")
    sys.stdout.flush()


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    workload = Workload(**spec["workload"])
    warmup, steps = int(spec["warmup"]), int(spec["steps"])

    started = time.perf_counter()
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(workload.seed)
    tokenizer = AutoTokenizer.from_pretrained(spec["model_folder"])
    model = AutoModelForCausalLM.from_pretrained(spec["model_folder"], dtype=torch.float32)
    loaded = time.perf_counter()

    # A conversational dataset: TRL renders each prompt with the tokenizer's chat template, as our engine does.
    dataset = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": t["question"]}], "answer": t["answer"]} for t in spec["tasks"]]
    )

    def correct_sum(completions: list[list[dict[str, str]]], answer: list[int], **_: Any) -> list[float]:
        return [first_integer_reward(c[0]["content"], a) for c, a in zip(completions, answer, strict=True)]

    micro_batches = workload.sequences // workload.micro_batch_size
    with tempfile.TemporaryDirectory(prefix="trl-grpo-") as output_dir:
        # Equal work: no gradient checkpointing, and float32 or bf16 mixed precision as on our side. TRL's defaults
        # (rl_vs_trl.py --trl-defaults) turn on both gradient checkpointing (it recomputes the forward) and bf16.
        precision = spec.get("precision", "fp32")
        as_ours: dict[str, Any] = {"bf16": precision == "bf16", "fp16": False, "gradient_checkpointing": False}
        config = GRPOConfig(
            output_dir=output_dir,
            use_cpu=True,
            **({} if precision == "defaults" else as_ours),
            # One optimizer step = one generation batch of prompts_per_step x group_size sequences, trained in
            # micro-batches of micro_batch_size (as LightningRL's micro_batch_size), gradients accumulated.
            per_device_train_batch_size=workload.micro_batch_size,
            gradient_accumulation_steps=micro_batches,
            num_generations=workload.group_size,
            num_iterations=1,
            max_completion_length=workload.max_completion_tokens,
            temperature=workload.temperature,
            learning_rate=workload.learning_rate,
            lr_scheduler_type="constant",
            max_grad_norm=workload.max_grad_norm,
            beta=0.0,
            loss_type="dapo",  # token-level mean over the step, as LightningRL's loss_aggregation="token"
            max_steps=warmup + steps,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,
            seed=workload.seed,
        )
        assert config.generation_batch_size == workload.sequences, config.generation_batch_size

        class TimedGRPOTrainer(GRPOTrainer):
            """GRPOTrainer whose generation phase reports its seconds and completion tokens."""

            events: list[dict[str, float]] = []

            def _generate_and_score_completions(self, inputs: Any) -> Any:
                begin = time.perf_counter()
                output = super()._generate_and_score_completions(inputs)
                self.events.append(
                    {
                        "generate_and_score": time.perf_counter() - begin,
                        "completion_tokens": float(output["completion_mask"].sum().item()),
                        "sequences": float(output["completion_ids"].shape[0]),
                    }
                )
                return output

        generate_seconds: list[float] = []
        original_generate = model.generate

        def timed_generate(*args: Any, **kwargs: Any) -> Any:
            begin = time.perf_counter()
            try:
                return original_generate(*args, **kwargs)
            finally:
                generate_seconds.append(time.perf_counter() - begin)

        model.generate = timed_generate  # type: ignore[method-assign]

        records: list[dict[str, Any]] = []

        class StepClock(TrainerCallback):
            begin = 0.0

            def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                TimedGRPOTrainer.events.clear()
                generate_seconds.clear()
                self.begin = time.perf_counter()

            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                seconds = time.perf_counter() - self.begin
                events = TimedGRPOTrainer.events
                generation = sum(e["generate_and_score"] for e in events)
                record = {
                    "step": state.global_step,
                    "seconds": seconds,
                    "generate_seconds": sum(generate_seconds),
                    "generate_and_score_seconds": generation,
                    "train_seconds": seconds - generation,
                    "completion_tokens": int(sum(e["completion_tokens"] for e in events)),
                    "sequences": int(sum(e["sequences"] for e in events)),
                }
                records.append(record)

            def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any) -> None:
                if logs and "reward" in logs and records:
                    records[-1]["reward_mean"] = logs["reward"]
                    records[-1]["trl_step_time"] = logs.get("step_time")
                    records[-1]["loss"] = logs.get("loss")
                    records[-1]["clip_fraction"] = logs.get("clip_ratio/region_mean")
                    emit("TRL_STEP", {**records[-1], "warmup": len(records) <= warmup})

        trainer = TimedGRPOTrainer(
            model=model,
            reward_funcs=correct_sum,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[StepClock()],
        )
        ready = time.perf_counter()
        trainer.train()

    measured = records[warmup:]
    emit(
        "TRL_RESULT",
        {
            "steps": records,
            "measured": len(measured),
            "median_seconds": statistics.median(r["seconds"] for r in measured),
            "load_seconds": loaded - started,
            "setup_seconds": ready - loaded,
            "threads": torch.get_num_threads(),
            "config": {
                "per_device_train_batch_size": config.per_device_train_batch_size,
                "gradient_accumulation_steps": config.gradient_accumulation_steps,
                "generation_batch_size": config.generation_batch_size,
                "steps_per_generation": config.steps_per_generation,
                "num_generations": config.num_generations,
                "gradient_checkpointing": config.gradient_checkpointing,
                "bf16": config.bf16,
                "loss_type": config.loss_type,
            },
            "versions": {p: version(p) for p in ("trl", "transformers", "torch", "accelerate", "datasets")},
        },
    )


if __name__ == "__main__":
    main()
