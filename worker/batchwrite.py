"""One batch's transaction as plain ``sqlite3`` calls, run on the connection's thread.

aiosqlite hands every call to its thread and back (a queue put, a thread wake-up
and an event-loop callback each); a batch used to make a dozen such hops (the
event insert, a load per entity and key chunk, an upsert per entity, ...). The
store now runs :func:`write_batch` as ONE call on that thread, so a batch costs
one hop, and its Python work (projection, merge, JSON) still overlaps the next
batch's read from Redis, which the event loop does meanwhile.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from contracts.events import AnyEvent
from worker.projections import (
    AUDIT_COLUMNS,
    JOURNAL_COLUMNS,
    STATUS_HISTORY_COLUMNS,
    Change,
    Entity,
    Projected,
    merge,
    new_row,
    project,
    row_from_db,
    row_values,
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


def insert_sql(table: str, columns: Sequence[str], verb: str = "INSERT OR IGNORE") -> str:
    marks = ", ".join("?" * len(columns))
    return f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({marks})"


def upsert_sql(entity: Entity) -> str:
    """Insert a merged row, or update the stored one in place (cheaper than REPLACE,
    which deletes and re-inserts every index entry)."""
    values = ", ".join(f"{c} = excluded.{c}" for c in entity.all_columns if c not in entity.key)
    return f"{insert_sql(entity.table, entity.all_columns, 'INSERT')} " + (
        f"ON CONFLICT ({', '.join(entity.key)}) DO UPDATE SET {values}"
    )


EVENT_COLUMNS = (
    "event_id",
    "type",
    "source",
    "account",
    "plugin_id",
    "mode",
    "subject",
    "ts",
    "stream_id",
    "committed_at",
    "body",
)
INSERT_EVENT = insert_sql("events", EVENT_COLUMNS)
INSERT_DEAD = insert_sql(
    "dead_letters",
    ("stream_id", "event_id", "raw", "reason", "deliveries", "received_at"),
    "INSERT",
)
_SET_LAST = "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_stream_id', ?)"


def stream_order(stream_id: str) -> tuple[int, int]:
    """A Redis stream id as a sortable (milliseconds, sequence) pair."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def event_row(d: Decoded, now: str) -> tuple[Any, ...]:
    e = d.event
    return (
        e.id,
        e.type,
        e.source,
        e.account,
        e.plugin_id,
        e.mode,
        _subject(e),
        utc_text(e.ts),
        d.stream_id,
        now,
        d.body,
    )


def write_batch(
    con: sqlite3.Connection, good: Sequence[Decoded], dead: Sequence[DeadLetter], now: str
) -> int:
    """Store one batch in one transaction; returns how many events were new.

    Runs on the connection's thread. On any error the transaction is left open
    for the caller to roll back (SQLite may already have ended it on its own).
    """
    con.execute("BEGIN IMMEDIATE")
    before = con.total_changes
    con.executemany(INSERT_EVENT, [event_row(d, now) for d in good])
    inserted = con.total_changes - before
    write_projections(con, project(d.event for d in good))
    if dead:
        con.executemany(
            INSERT_DEAD,
            [(d.stream_id, d.event_id, d.raw, d.reason, d.deliveries, now) for d in dead],
        )
    ids = [x.stream_id for x in good] + [x.stream_id for x in dead]
    if ids:
        con.execute(_SET_LAST, (max(ids, key=stream_order),))
    con.execute("COMMIT")
    return inserted


def write_projections(con: sqlite3.Connection, projected: Projected) -> None:
    """Merge a batch's changes into the stored entity rows; append the log-like rows."""
    by_entity: dict[Entity, list[Change]] = defaultdict(list)
    for change in projected.changes:
        by_entity[change.entity].append(change)
    for entity, changes in by_entity.items():
        rows = load_rows(con, entity, {c.key for c in changes})
        for change in changes:
            row = rows.get(change.key)
            if row is None:
                row = rows[change.key] = new_row(entity, change.key, change.ts)
            merge(row, change)
        con.executemany(upsert_sql(entity), [row_values(entity, row) for row in rows.values()])
    for table, columns, rows_ in (
        ("trade_status_history", STATUS_HISTORY_COLUMNS, projected.status_history),
        ("journal_entries", JOURNAL_COLUMNS, projected.journal),
        ("audit_log", AUDIT_COLUMNS, projected.audit),
    ):
        if rows_:
            con.executemany(insert_sql(table, columns), rows_)


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
