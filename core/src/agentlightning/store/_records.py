"""Spans and resources in the SQLite store: numbering and writing spans, reading them back, versioning resources.

The functions taking a :class:`Transaction` run inside the database thread (see ``_database``).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Mapping
from operator import itemgetter

from agentlightning.errors import AttemptNotFound, ResourcesNotFound, StoreError
from agentlightning.store._database import Transaction
from agentlightning.store._lifecycle import ACTIVE_ATTEMPT_STATUSES
from agentlightning.store._schema import MAX_SEQUENCE_ID, dumps, get_attempt, get_rollout, new_id
from agentlightning.store._transitions import touch_attempt
from agentlightning.store.base import EncodedSpan
from agentlightning.types import AnyResource, Resources, Span
from agentlightning.types.resources import Resource

# An EncodedSpan's span id and JSON (it is a named tuple).
_SPAN_ID = itemgetter(2)
_JSON = itemgetter(3)


# --- spans -------------------------------------------------------------------------------------
def add_parsed_spans_op(spans: list[Span]) -> Callable[[Transaction], list[int]]:
    """:func:`add_spans_op` for ``Span`` objects. They are turned to JSON here, by the caller, not in the
    database thread."""
    return add_spans_op([EncodedSpan.of(span) for span in spans], [span.sequence_id for span in spans])


def add_spans_op(
    spans: list[EncodedSpan], given_ids: list[int | None] | None = None
) -> Callable[[Transaction], list[int]]:
    """The work of storing ``spans`` (with the sequence ids some already have, ``given_ids``): it returns their
    sequence ids."""

    def op(txn: Transaction) -> list[int]:
        if not spans:
            return []
        if given_ids is not None:
            return _add_spans(txn, spans, given_ids, check_stored=True)
        # New spans (the tracer's and the gateway's batches) are written without first looking up whether the attempt
        # holds any of them: a resent batch (its acknowledgement lost) breaks the unique span id index, and only then
        # is it written again with the lookup (spans already stored keep their number).
        txn.conn.execute("SAVEPOINT new_spans")
        try:
            return _add_spans(txn, spans, None, check_stored=False)
        except sqlite3.IntegrityError:
            txn.conn.execute("ROLLBACK TO new_spans")
            return _add_spans(txn, spans, None, check_stored=True)
        finally:
            txn.conn.execute("RELEASE new_spans")

    return op


def _add_spans(
    txn: Transaction, spans: list[EncodedSpan], given_ids: list[int | None] | None, check_stored: bool
) -> list[int]:
    """Number and insert ``spans``; with ``check_stored``, those the attempt holds already keep their number instead
    (and ``given_ids`` are honoured)."""
    now = time.time()
    first_attempt = spans[0].attempt_id
    by_attempt: dict[str, list[int] | range] = {}
    if all(span.attempt_id == first_attempt for span in spans):  # the usual batch: one attempt's spans
        by_attempt[first_attempt] = range(len(spans))
    else:
        for index, span in enumerate(spans):
            by_attempt.setdefault(span.attempt_id, []).append(index)  # type: ignore[union-attr]
    sequence_ids = [0] * len(spans)
    rows: list[tuple[int, str, str]] = []
    for attempt_id, indices in by_attempt.items():
        row = get_attempt(txn, spans[indices[0]].rollout_id, attempt_id)
        for index in indices[1:]:
            if spans[index].rollout_id != row.attempt.rollout_id:
                raise AttemptNotFound(spans[index].rollout_id, attempt_id)
        first_key, last_key = row.span_keys
        last = txn.conn.execute(
            "SELECT MAX(key) FROM spans WHERE key BETWEEN ? AND ?", (first_key, last_key)
        ).fetchone()[0]
        next_id = 1 if last is None else last - first_key + 1
        if not check_stored:  # new spans, numbered in order (made in C: one row per span)
            if next_id + len(indices) > MAX_SEQUENCE_ID + 1:
                raise StoreError(f"Attempt {attempt_id} holds the most spans an attempt can ({MAX_SEQUENCE_ID}).")
            ours = spans if len(by_attempt) == 1 else [spans[i] for i in indices]
            rows += zip(
                range(first_key + next_id, first_key + next_id + len(indices)),
                map(_SPAN_ID, ours),
                map(_JSON, ours),
                strict=True,
            )
            if len(by_attempt) == 1:
                sequence_ids = list(range(next_id, next_id + len(spans)))
            else:
                for index, number in zip(indices, range(next_id, next_id + len(indices)), strict=True):
                    sequence_ids[index] = number
        else:
            # Spans already stored (a resent batch) keep their number, and a span twice in the batch is written once,
            # both given its number; an attempt without spans has none stored.
            known: dict[str, int] = {}
            if next_id > 1:
                known = dict(
                    txn.conn.execute(
                        "SELECT span_id, key & ? FROM spans WHERE key >> 32 = ? "
                        "AND span_id IN (SELECT value FROM json_each(?))",
                        (MAX_SEQUENCE_ID, row.span_key, dumps([spans[i].span_id for i in indices])),
                    ).fetchall()
                )
            for index in indices:
                span = spans[index]
                if span.span_id in known:
                    sequence_ids[index] = known[span.span_id]
                    continue
                given = given_ids[index] if given_ids is not None else None
                if given is None:
                    sequence_id = next_id
                    next_id += 1
                else:
                    sequence_id = given
                    next_id = max(next_id, sequence_id + 1)
                if sequence_id > MAX_SEQUENCE_ID:
                    raise StoreError(f"Attempt {attempt_id} holds the most spans an attempt can ({MAX_SEQUENCE_ID}).")
                known[span.span_id] = sequence_ids[index] = sequence_id
                rows.append((first_key | sequence_id, span.span_id, span.json))
        if row.attempt.status in ACTIVE_ATTEMPT_STATUSES:
            touch_attempt(txn, row, now, to_running=True)
    txn.conn.executemany("INSERT INTO spans (key, span_id, data) VALUES (?, ?, ?)", rows)
    return sequence_ids


def numbered(spans: list[Span], sequence_ids: list[int]) -> list[Span]:
    for span, sequence_id in zip(spans, sequence_ids, strict=True):
        span.sequence_id = sequence_id
    return spans


async def numbered_when_written(spans: list[Span], written: asyncio.Future[list[int]]) -> list[Span]:
    return numbered(spans, await written)


def span_rows(txn: Transaction, rollout_id: str, attempt_id: str | None) -> list[tuple[str, int]]:
    """(JSON without the sequence id, sequence id) of the spans of an attempt, of the latest, or of every attempt."""
    row = get_rollout(txn, rollout_id)
    if attempt_id == "latest":
        attempt_id = row.latest_attempt_id
        if attempt_id is None:
            return []
    if attempt_id is not None:
        first, last = get_attempt(txn, rollout_id, attempt_id).span_keys
        return txn.conn.execute(
            "SELECT data, key & ? FROM spans WHERE key BETWEEN ? AND ? ORDER BY key", (MAX_SEQUENCE_ID, first, last)
        ).fetchall()
    return txn.conn.execute(
        "SELECT s.data, s.key & ? FROM attempts a JOIN spans s ON s.key BETWEEN a.span_key << 32 AND "
        "(a.span_key << 32) | ? WHERE a.rollout_id = ? ORDER BY a.sequence_id, s.key",
        (MAX_SEQUENCE_ID, MAX_SEQUENCE_ID, rollout_id),
    ).fetchall()


def spans_of_rows(rows: list[tuple[str, int]]) -> list[Span]:
    spans = []
    for data, sequence_id in rows:
        span = Span.model_validate_json(data)
        span.sequence_id = sequence_id
        spans.append(span)
    return spans


def spans_json_of_rows(rows: list[tuple[str, int]]) -> str:
    """The spans as one JSON array, each with its sequence id put back, without parsing them."""
    return "[" + ",".join(f'{{"sequence_id":{seq},{data[1:]}' for data, seq in rows) + "]"


# --- resources ---------------------------------------------------------------------------------
def check_resources(resources: Mapping[str, AnyResource]) -> None:
    for name, value in resources.items():
        if not isinstance(value, Resource):
            raise StoreError(
                f"Resource {name!r} is a {type(value).__name__}; pass an agl.LLM, agl.PromptTemplate or other agl.Resource."
            )


def insert_resources(txn: Transaction, resources: Mapping[str, AnyResource], resources_id: str | None) -> Resources:
    """Publish ``resources`` as the next version."""
    version = txn.conn.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM resources").fetchone()[0]
    published = Resources(
        resources_id=resources_id or new_id("rs"),
        version=version,
        created_time=time.time(),
        resources=dict(resources),
    )
    txn.conn.execute(
        "INSERT INTO resources (resources_id, version, created_time, data) VALUES (?, ?, ?, ?)",
        (published.resources_id, version, published.created_time, published.model_dump_json()),
    )
    return published


def get_resources(txn: Transaction, resources_id: str) -> Resources:
    row = txn.conn.execute("SELECT data FROM resources WHERE resources_id = ?", (resources_id,)).fetchone()
    if row is None:
        raise ResourcesNotFound(f"No resources version with id {resources_id!r} in this store.")
    return Resources.model_validate_json(row[0])


def get_latest_resources(txn: Transaction) -> Resources | None:
    row = txn.conn.execute("SELECT data FROM resources ORDER BY version DESC LIMIT 1").fetchone()
    return None if row is None else Resources.model_validate_json(row[0])
