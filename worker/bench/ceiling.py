"""The ceiling: the drain's rows written by a bare sqlite3 loop, nothing else.

Same schema (``worker.schema.MIGRATIONS``), same rows (the event log plus the
projection rows each batch changes, computed with ``worker.projections`` exactly
as the worker merges them), same batch size (``batch_max``), one transaction
per batch, WAL and ``synchronous=FULL``. All rows are built before the clock
starts; only the inserts and commits are timed. What the worker does on top
(reading Redis, validating, loading rows to merge, acknowledging) is what the
ratio drain/ceiling measures.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contracts.events import TERMINAL_STATUSES, AnyEvent, parse_event
from worker.batchwrite import EVENT_COLUMNS, insert_sql, upsert_sql
from worker.projections import (
    AUDIT_COLUMNS,
    ENTITIES,
    JOURNAL_COLUMNS,
    STATUS_HISTORY_COLUMNS,
    Entity,
    merge,
    new_row,
    project,
    row_values,
    utc_text,
)
from worker.schema import MIGRATIONS

_SIDE_TABLES = (
    ("trade_status_history", STATUS_HISTORY_COLUMNS),
    ("journal_entries", JOURNAL_COLUMNS),
    ("audit_log", AUDIT_COLUMNS),
)


@dataclass
class Batch:
    """Every row one worker transaction writes."""

    statements: list[tuple[str, list[tuple[Any, ...]]]] = field(default_factory=list)
    last_stream_id: str = ""


def create_schema(con: sqlite3.Connection) -> None:
    """The worker's schema, all migrations, in WAL mode."""
    con.execute("PRAGMA journal_mode = WAL")
    for version, statements in enumerate(MIGRATIONS, start=1):
        con.execute("BEGIN")
        for statement in statements:
            con.execute(statement)
        con.execute(f"PRAGMA user_version = {version}")
        con.execute("COMMIT")


def subject(event: AnyEvent) -> str | None:
    for name in ("trade_id", "signal_id", "position_id", "symbol", "date"):
        value = getattr(event.data, name, None)
        if value is not None:
            return str(value)
    return None


def event_row(event: AnyEvent, stream_id: str, body: str, now: str) -> tuple[Any, ...]:
    return (
        event.id,
        event.type,
        event.source,
        event.account,
        event.plugin_id,
        event.mode,
        subject(event),
        utc_text(event.ts),
        stream_id,
        now,
        body,
    )


def build_batches(bodies: Sequence[str], stream_ids: Sequence[str], batch_max: int) -> list[Batch]:
    """The rows of every batch, merged across batches as the worker merges them."""
    state: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = {}
    batches = []
    for start in range(0, len(bodies), batch_max):
        chunk = range(start, min(start + batch_max, len(bodies)))
        events = [parse_event(bodies[i]) for i in chunk]
        now = utc_text(dt.datetime.now(dt.UTC))
        batch = Batch(last_stream_id=stream_ids[chunk[-1]])
        pairs = zip(events, chunk, strict=True)
        rows = [event_row(e, stream_ids[i], bodies[i], now) for e, i in pairs]
        batch.statements.append((insert_sql("events", EVENT_COLUMNS), rows))
        projected = project(events)
        touched: dict[Entity, dict[tuple[Any, ...], dict[str, Any]]] = {e: {} for e in ENTITIES}
        for change in projected.changes:
            slot = (change.entity.table, change.key)
            row = state.get(slot)
            if row is None:
                row = state[slot] = new_row(change.entity, change.key, change.ts)
            merge(row, change)
            touched[change.entity][change.key] = row
        for entity, entity_rows in touched.items():
            if entity_rows:
                sql = upsert_sql(entity)  # the worker's own statement
                values = [row_values(entity, row) for row in entity_rows.values()]
                batch.statements.append((sql, values))
                for key, row in entity_rows.items():
                    if row.get("status") in TERMINAL_STATUSES:
                        del state[(entity.table, key)]  # no more events for it in the mix
        for (table, columns), side_rows in zip(
            _SIDE_TABLES,
            (projected.status_history, projected.journal, projected.audit),
            strict=True,
        ):
            if side_rows:
                batch.statements.append((insert_sql(table, columns), side_rows))
        batches.append(batch)
    return batches


@dataclass
class CeilingResult:
    events: int
    seconds: float
    events_per_s: float
    rows: int


def run_ceiling(db: Path, batches: Sequence[Batch], events: int) -> CeilingResult:
    """Write the batches, one transaction each, WAL + synchronous=FULL; timed."""
    con = sqlite3.connect(db, isolation_level=None)
    try:
        create_schema(con)
        con.execute("PRAGMA synchronous = FULL")
        meta = "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_stream_id', ?)"
        rows = 0
        started = time.perf_counter()
        for batch in batches:
            con.execute("BEGIN IMMEDIATE")
            for sql, values in batch.statements:
                con.executemany(sql, values)
                rows += len(values)
            con.execute(meta, (batch.last_stream_id,))
            con.execute("COMMIT")
        seconds = max(time.perf_counter() - started, 1e-9)
    finally:
        con.close()
    return CeilingResult(events, seconds, events / seconds, rows)
