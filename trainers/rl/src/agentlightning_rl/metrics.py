"""What a LightningRL run reports: one record per iteration and per validation, written as they come.

``metrics_dir`` receives:

- ``metrics.csv``: one row per training iteration (reward, success rate, tokens, throughput, loss terms);
- ``validation.csv``: one row per validation (after iteration 0 = the untrained model);
- ``tensorboard/``: the same figures as TensorBoard scalars (``tensorboard --logdir <metrics_dir>/tensorboard``);
- ``curve.png``: training reward per iteration and validation success rate, redrawn after every validation.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["IterationRecord", "MetricsLog", "ValidationRecord"]

log = logging.getLogger("agentlightning_rl")


@dataclass(frozen=True)
class IterationRecord:
    """One training iteration: its rollouts, and the optimizer step taken on them."""

    iteration: int
    #: Rollouts run, and how many of them failed (a failed rollout gets ``missing_final_reward``).
    rollouts: int
    failed_rollouts: int
    #: Mean final reward of the rollouts, and the share whose reward reached ``success_threshold``.
    reward_mean: float
    success_rate: float
    #: Groups that gave no samples (all rewards equal, or no calls of the trained agents).
    skipped_groups: int
    #: LLM calls trained on, and their completion tokens (0 when every group was skipped: no step taken).
    sequences: int
    trained_tokens: int
    #: Completion tokens the engine generated for every LLM call of the iteration's rollouts.
    completion_tokens: int
    rollout_seconds: float
    train_seconds: float
    seconds: float
    loss: float | None
    clip_fraction: float | None
    approx_kl: float | None
    reference_kl: float | None
    grad_norm: float | None
    #: Mean importance ratio new / engine policy over the step's tokens (≈1 before the update: the engine and
    #: the step compute the same logprobs).
    ratio_mean: float | None = None

    @property
    def train_tokens_per_second(self) -> float:
        """Completion tokens through the optimizer per second of the step."""
        return self.trained_tokens / self.train_seconds if self.train_seconds > 0 else 0.0

    @property
    def rollout_tokens_per_second(self) -> float:
        """Completion tokens generated per second of the rollouts."""
        return self.completion_tokens / self.rollout_seconds if self.rollout_seconds > 0 else 0.0


@dataclass(frozen=True)
class ValidationRecord:
    """One pass over the validation set, after ``iteration`` training iterations (0: the untrained model)."""

    iteration: int
    rollouts: int
    failed_rollouts: int
    reward_mean: float
    success_rate: float
    seconds: float


class MetricsLog:
    """Appends records to CSV files and TensorBoard under ``folder``, and redraws ``curve.png``.

    Resuming a run appends to the files it left (after :meth:`rewind` to the checkpoint's iteration).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.folder / "metrics.csv"
        self.validation_csv_path = self.folder / "validation.csv"
        self.plot_path = self.folder / "curve.png"
        self.tensorboard_dir = self.folder / "tensorboard"
        from torch.utils.tensorboard import SummaryWriter

        self._tensorboard = SummaryWriter(str(self.tensorboard_dir))

    def rewind(self, iteration: int) -> None:
        """Keep only the rows up to ``iteration``: a run resumed from a checkpoint redoes the iterations after it,
        which a crash may have logged already."""
        for path in (self.csv_path, self.validation_csv_path):
            if not path.exists():
                continue
            with path.open(newline="") as file:
                reader = csv.DictReader(file)
                fields, rows = reader.fieldnames, [r for r in reader if int(r["iteration"]) <= iteration]
            with path.open("w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=list(fields or []))
                writer.writeheader()
                writer.writerows(rows)

    def iteration(self, record: IterationRecord) -> None:
        """Write one iteration's figures."""
        row = _row(record)
        row["train_tokens_per_second"] = round(record.train_tokens_per_second, 2)
        row["rollout_tokens_per_second"] = round(record.rollout_tokens_per_second, 2)
        _append(self.csv_path, row)
        for name, value in row.items():
            if name != "iteration" and isinstance(value, int | float):
                self._tensorboard.add_scalar(f"train/{name}", value, record.iteration)
        self._tensorboard.flush()

    def validation(self, record: ValidationRecord) -> None:
        """Write one validation's figures."""
        row = _row(record)
        _append(self.validation_csv_path, row)
        for name in ("reward_mean", "success_rate"):
            self._tensorboard.add_scalar(f"validation/{name}", row[name], record.iteration)
        self._tensorboard.flush()

    def plot(self, history: list[IterationRecord], validations: list[ValidationRecord]) -> None:
        """Draw the training reward per iteration and the validation success rate into ``curve.png``."""
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(figsize=(7, 4))
        if history:
            axes.plot([r.iteration for r in history], [r.reward_mean for r in history], label="training reward (mean)")
        if validations:
            axes.plot(
                [v.iteration for v in validations],
                [v.success_rate for v in validations],
                marker="o",
                label="validation success rate",
            )
        axes.set_xlabel("iteration")
        axes.set_ylim(bottom=min(0.0, *(r.reward_mean for r in history)) if history else 0.0)
        axes.grid(alpha=0.3)
        axes.legend(loc="best")
        axes.set_title("LightningRL")
        figure.tight_layout()
        figure.savefig(self.plot_path, dpi=100)
        plt.close(figure)

    def close(self) -> None:
        """Flush and close TensorBoard's writer."""
        self._tensorboard.close()


def _row(record: Any) -> dict[str, Any]:
    return {
        name: round(value, 6) if isinstance(value, float) else value
        for name, value in dataclasses.asdict(record).items()
    }


def _append(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow({name: "" if value is None else value for name, value in row.items()})
