"""``agl runs list`` and ``agl runs show``: rollouts, attempts and span trees, rendered with rich."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any

from agentlightning import semconv
from agentlightning.reward import final_reward, reward_of
from agentlightning.store import LightningStore, open_store
from agentlightning.types import Rollout, RolloutStatus, Span

_STATUS_STYLE = {
    RolloutStatus.SUCCEEDED: "green",
    RolloutStatus.FAILED: "red",
    RolloutStatus.CANCELLED: "yellow",
    RolloutStatus.RUNNING: "cyan",
    RolloutStatus.PREPARING: "cyan",
}
# Attributes worth a glance in the span tree, in the order shown, with their short labels.
_SHOWN_ATTRIBUTES = {
    semconv.GEN_AI_AGENT_NAME: "agent",
    semconv.GEN_AI_REQUEST_MODEL: "model",
    semconv.GEN_AI_TOOL_NAME: "tool",
    semconv.GEN_AI_USAGE_INPUT_TOKENS: "in_tokens",
    semconv.GEN_AI_USAGE_OUTPUT_TOKENS: "out_tokens",
    semconv.AGL_REWARD_NAME: "reward_name",
}


def _open(args: argparse.Namespace) -> LightningStore:
    return open_store(args.store, token=args.token, read_only=args.store.startswith("sqlite://"))


def _time(value: float | None) -> str:
    return "" if value is None else dt.datetime.fromtimestamp(value).strftime("%m-%d %H:%M:%S")


def _console() -> Any:
    from rich.console import Console

    console = Console()
    # Piped output has no width of its own; rich's 80 columns would squeeze the tables.
    return console if console.is_terminal else Console(width=150)


def _duration(start: float | None, end: float | None) -> str:
    return "" if start is None or end is None else f"{end - start:.2f}s"


def _short(value: Any, width: int = 40) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


async def _rows(
    store: LightningStore, statuses: Sequence[str] | None, limit: int
) -> list[tuple[Rollout, float | None]]:
    try:
        rollouts = await store.query_rollouts(
            status=None if statuses is None else [RolloutStatus(s) for s in statuses], limit=limit, newest_first=True
        )
        spans = await asyncio.gather(*(store.query_spans(r.rollout_id, "latest") for r in rollouts))
        return [(r, final_reward(s)) for r, s in zip(rollouts, spans, strict=True)]
    finally:
        await store.close()


def list_runs(args: argparse.Namespace) -> int:
    """Print a table of the newest rollouts."""
    from rich.table import Table

    if args.status:
        valid = {s.value for s in RolloutStatus}
        wrong = [s for s in args.status if s not in valid]
        if wrong:
            raise SystemExit(f"agl: error: unknown status {wrong}; choose from {sorted(valid)}")
    rows = asyncio.run(_rows(_open(args), args.status, args.limit))
    table = Table(title=f"Rollouts in {args.store} (newest first)")
    for column in ("rollout", "status", "mode", "resources", "attempts", "reward", "started", "duration", "input"):
        table.add_column(column, no_wrap=column != "input")
    for rollout, reward in rows:
        style = _STATUS_STYLE.get(rollout.status, "")
        table.add_row(
            rollout.rollout_id,
            f"[{style}]{rollout.status.value}[/]" if style else rollout.status.value,
            rollout.mode.value if rollout.mode else "",
            rollout.resources_id or "",
            str(rollout.num_attempts),
            "" if reward is None else f"{reward:g}",
            _time(rollout.start_time),
            _duration(rollout.start_time, rollout.end_time),
            _short(rollout.input),
        )
    console = _console()
    if not rows:
        console.print(f"No rollouts in {args.store}.")
        return 0
    console.print(table)
    return 0


def _span_label(span: Span) -> str:
    parts = [f"[bold]{span.name}[/]", f"[dim]#{span.sequence_id}[/]"]
    if span.end_time is not None:
        parts.append(f"{(span.end_time - span.start_time) * 1000:.1f} ms")
    reward = reward_of(span)
    if reward is not None:
        parts.append(f"[magenta]reward={reward:g}[/]")
    for key, label in _SHOWN_ATTRIBUTES.items():
        if key in span.attributes:
            parts.append(f"{label}={_short(span.attributes[key], 30)}")
    if span.status.status_code.value == "error":
        parts.append(f"[red]error: {_short(span.status.description or '', 60)}[/]")
    return "  ".join(parts)


def span_tree(spans: Sequence[Span], title: str) -> Any:
    """A rich Tree of spans, nested by parent span id (spans whose parent is absent sit at the root)."""
    from rich.tree import Tree

    tree = Tree(title)
    known = {s.span_id for s in spans}
    children: dict[str | None, list[Span]] = {}
    for span in spans:
        parent = span.parent_id if span.parent_id in known else None
        children.setdefault(parent, []).append(span)

    def grow(node: Any, parent: str | None, depth: int) -> None:
        for span in children.get(parent, []):
            branch = node.add(_span_label(span))
            if depth < 64:
                grow(branch, span.span_id, depth + 1)

    grow(tree, None, 0)
    return tree


async def _details(store: LightningStore, rollout_id: str) -> tuple[Rollout, list[Any], list[Span]]:
    try:
        rollout = await store.get_rollout_by_id(rollout_id)
        attempts = await store.query_attempts(rollout_id)
        spans = await store.query_spans(rollout_id)
        return rollout, attempts, spans
    finally:
        await store.close()


def show_run(args: argparse.Namespace) -> int:
    """Print one rollout, its attempts and the span tree of each attempt."""
    from rich.table import Table

    rollout, attempts, spans = asyncio.run(_details(_open(args), args.rollout_id))
    console = _console()
    console.print(
        f"[bold]Rollout {rollout.rollout_id}[/]  status={rollout.status.value}  mode={rollout.mode.value if rollout.mode else '-'}"
    )
    console.print(f"input: {_short(rollout.input, 200)}")
    if rollout.resources_id:
        console.print(f"resources: {rollout.resources_id}")
    table = Table(title="Attempts")
    for column in ("#", "attempt", "status", "worker", "started", "duration", "reward"):
        table.add_column(column)
    for attempt in attempts:
        mine = [s for s in spans if s.attempt_id == attempt.attempt_id]
        reward = final_reward(mine)
        table.add_row(
            str(attempt.sequence_id),
            attempt.attempt_id,
            attempt.status.value,
            attempt.worker_id or "",
            _time(attempt.start_time),
            _duration(attempt.start_time, attempt.end_time),
            "" if reward is None else f"{reward:g}",
        )
    console.print(table)
    for attempt in attempts:
        mine = [s for s in spans if s.attempt_id == attempt.attempt_id]
        console.print(span_tree(mine, f"Spans of attempt {attempt.sequence_id} ({len(mine)})"))
    return 0
