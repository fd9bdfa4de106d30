"""The rows and statements of a batch's transaction, as plain ``sqlite3`` calls.

What a stream entry becomes (:class:`Decoded` or :class:`DeadLetter`), the
event log's row, the SQL the store writes with, and the loading of stored
entity rows; :mod:`worker.plan` builds a batch's transaction from these.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from contracts.events import AnyEvent
from worker.commit import insert_sql
from worker.projections import (
    Entity,
    row_from_db,
    utc_text,
)

_KEYS_PER_QUERY = 400


@dataclass(frozen=True, slots=True)
class Decoded:
    """A stream entry that decoded and validated."""

    stream_id: str
    body: str
    event: AnyEvent


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A stream entry that cannot be stored, and why."""

    stream_id: str
    raw: bytes
    reason: str
    event_id: str | None = None
    deliveries: int = 1


_SUBJECT_FIELDS = ("trade_id", "signal_id", "position_id", "symbol", "date")


def _subject(event: AnyEvent) -> str | None:
    """The first of these the payload has (a declared field or an extra one)."""
    data = event.data
    values = data.__dict__
    extra = data.__pydantic_extra__ or {}
    for name in _SUBJECT_FIELDS:
        value = values.get(name)
        if value is None:
            value = extra.get(name)
        if value is not None:
            return str(value)
    return None


def upsert_sql(entity: Entity) -> str:
    """Insert a merged row, or update the stored one in place (cheaper than REPLACE,
    which deletes and re-inserts every index entry)."""
    values = ", ".join(f"{c} = excluded.{c}" for c in entity.all_columns if c not in entity.key)
    return f"{insert_sql(entity.table, entity.all_columns, 'INSERT')} " + (
        f"ON CONFLICT ({', '.join(entity.key)}) DO UPDATE SET {values}"
    )


def stream_order(stream_id: str) -> tuple[int, int]:
    """A Redis stream id as a sortable (milliseconds, sequence) pair."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def event_row(d: Decoded, now: str, ts: str | None = None) -> tuple[Any, ...]:
    e = d.event
    return (
        e.id,
        e.type,
        e.source,
        e.account,
        e.plugin_id,
        e.mode,
        _subject(e),
        ts or utc_text(e.ts),
        d.stream_id,
        now,
        d.body,
    )


def load_rows(
    con: sqlite3.Connection, entity: Entity, keys: Iterable[tuple[Any, ...]]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The stored rows for these keys (absent keys are simply missing).

    Keys are grouped by all but their last column, which goes into an IN
    list, so every lookup is a primary-key search (a row-value IN over
    VALUES would make SQLite scan the whole table).
    """
    by_prefix: dict[tuple[Any, ...], list[Any]] = defaultdict(list)
    for key in keys:
        by_prefix[key[:-1]].append(key[-1])
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    cols = ", ".join(entity.all_columns)
    prefix_match = " AND ".join(f"{k} = ?" for k in entity.key[:-1])
    width = len(entity.key)
    for prefix, lasts in by_prefix.items():
        for start in range(0, len(lasts), _KEYS_PER_QUERY):
            chunk = lasts[start : start + _KEYS_PER_QUERY]
            marks = ", ".join("?" * len(chunk))
            sql = (
                f"SELECT {cols} FROM {entity.table} "
                f"WHERE {prefix_match} AND {entity.key[-1]} IN ({marks})"
            )
            for record in con.execute(sql, (*prefix, *chunk)):
                found[tuple(record[:width])] = row_from_db(entity, tuple(record))
    return found
