"""What an SFT run reports: one record per iteration and per validation, written as they come.

``metrics_dir`` receives ``metrics.csv`` (one row per iteration: rollouts, reward, selection, loss, tokens,
times) and ``validation.csv`` (one row per validation; iteration 0 is the untrained model).
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["IterationRecord", "MetricsLog", "ValidationRecord"]


@dataclass(frozen=True)
class IterationRecord:
    """One iteration: its rollouts, what was selected from them, and the fine-tuning on it."""

    iteration: int
    rollouts: int
    failed_rollouts: int
    #: Mean final reward of the rollouts (none recorded: 0), and the share that reached ``success_threshold``.
    reward_mean: float
    success_rate: float
    #: Rollouts selected, and the training examples (LLM calls) they gave.
    selected_rollouts: int
    examples: int
    #: Completion tokens through the optimizer (every epoch), optimizer steps, mean loss (``None``: no step).
    trained_tokens: int
    steps: int
    loss: float | None
    grad_norm: float | None
    rollout_seconds: float
    train_seconds: float
    seconds: float


@dataclass(frozen=True)
class ValidationRecord:
    """One pass over the validation set, after ``iteration`` iterations (0: the untrained model)."""

    iteration: int
    rollouts: int
    failed_rollouts: int
    reward_mean: float
    success_rate: float
    seconds: float


class MetricsLog:
    """Appends records to ``metrics.csv`` and ``validation.csv`` under ``folder`` (created if needed)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def iteration(self, record: IterationRecord) -> None:
        """Append one iteration's row."""
        _append(self.folder / "metrics.csv", _row(record))

    def validation(self, record: ValidationRecord) -> None:
        """Append one validation's row."""
        _append(self.folder / "validation.csv", _row(record))


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
