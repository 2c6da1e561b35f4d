"""What a run leaves behind for people: the table printed after every round, and the history JSON file.

The JSON file (rewritten after the seed's scoring and after every round, so a stopped run keeps what it did)::

    {"run_id": ..., "config": {...}, "seed": "c0", "best": "c3", "seed_score": 0.25, "best_score": 0.75,
     "candidates": [{"id": "c3", "round": 1, "parent": "c0", "edited": "system_prompt", "prompts": {...},
                     "critique": "...", "resources_id": "apo-…-c3", "version": 5, "score": 0.75,
                     "task_scores": {"t1": 1.0, ...}, "rollouts": 4, "failed_rollouts": 0}, ...],
     "rounds": [{"round": 1, "parents": ["c0"], "minibatch": [...], "parent_train_rewards": {...},
                 "children": ["c1", "c2"], "skipped": [{"parent": ..., "prompt": ..., "reason": ...}],
                 "beam": [...], "best": "c3", "best_score": 0.75, "seconds": 12.3}, ...]}
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentlightning_apo.candidates import Candidate, RoundRecord
from agentlightning_apo.config import APOConfig

__all__ = ["write_history", "round_table"]


def write_history(
    path: Path,
    run_id: str,
    config: APOConfig,
    candidates: Sequence[Candidate],
    rounds: Sequence[RoundRecord],
    best: Candidate,
) -> None:
    """Write the run so far to ``path`` (atomically: a reader never sees half a file)."""
    document = {
        "run_id": run_id,
        "config": {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)},
        "seed": candidates[0].id,
        "best": best.id,
        "seed_score": _number(candidates[0].score),
        "best_score": _number(best.score),
        "candidates": [{**dataclasses.asdict(c), "score": _number(c.score)} for c in candidates],
        "rounds": [dataclasses.asdict(r) for r in rounds],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(document, indent=2, ensure_ascii=False), encoding="utf-8")
    partial.replace(path)


def round_table(record: RoundRecord, candidates: dict[str, Candidate], width: int = 120) -> str:
    """The round as a text table: its parents and children with their scores, and which are in the beam."""
    from rich.console import Console
    from rich.table import Table

    beam = set(record.beam)
    table = Table(title=f"APO round {record.round}: best {record.best} ({record.best_score:.3f})", title_justify="left")
    for column in ("candidate", "from", "edited", "version", "val score", "tasks", "failed", "", "prompt"):
        table.add_column(column, no_wrap=column != "prompt")
    for cid in [*record.parents, *record.children]:
        c = candidates[cid]
        state = "best" if cid == record.best else "beam" if cid in beam else ""
        table.add_row(
            c.id,
            c.parent or "seed",
            c.edited or "",
            "" if c.version is None else str(c.version),
            f"{c.score:.3f}",
            str(len(c.task_scores)),
            str(c.failed_rollouts),
            state,
            _short(c.prompts[c.edited] if c.edited else next(iter(c.prompts.values()), ""), 60),
        )
    for skipped in record.skipped:
        table.add_row("-", skipped.parent, skipped.prompt, "", "", "", "", "skipped", _short(skipped.reason, 60))
    out = io.StringIO()
    Console(file=out, width=width, no_color=True, highlight=False).print(table)
    return out.getvalue().rstrip()


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _plain(value: Any) -> Any:
    """A config value as JSON: paths and collections as strings and lists, callables by name."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if callable(value):
        return getattr(value, "__name__", repr(value))
    if isinstance(value, (list, tuple, set, frozenset)):
        return sorted(map(str, value)) if isinstance(value, (set, frozenset)) else [_plain(v) for v in value]
    return repr(value)
