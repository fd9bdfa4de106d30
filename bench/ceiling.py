"""The ceiling: the drain's rows written by a bare sqlite3 loop, nothing else.

Same schema (``worker.store.schema.MIGRATIONS``), same statements and rows (the event
log plus the projection rows each batch changes, planned by ``worker.store.write``
exactly as the worker plans them), same batch size (``batch_max``), one transaction
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

from contracts.events import parse_event
from contracts.vocabulary import TERMINAL_STATUSES
from worker.store.batch import Decoded, plan_batch
from worker.store.projections import Entity, utc_text
from worker.store.rows import Key, Row
from worker.store.schema import MIGRATIONS
from worker.store.sql import INSERT_EVENT, SET_LAST
from worker.store.write import plan_projections


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


class _Rows:
    """The rows earlier batches left, as the worker's cache holds them (in memory)."""

    def __init__(self) -> None:
        self.state: dict[tuple[str, Key], Row] = {}

    def rows(self, entity: Entity, keys: set[Key]) -> dict[Key, Row]:
        table = entity.table
        return {k: self.state[(table, k)] for k in keys if (table, k) in self.state}

    def keep(self, entity: Entity, rows: dict[Key, Row]) -> None:
        for key, row in rows.items():
            if row.get("status") in TERMINAL_STATUSES:
                self.state.pop((entity.table, key), None)  # no more events for it in the mix
            else:
                self.state[(entity.table, key)] = row

    def clear(self) -> None:
        self.state.clear()


def build_batches(bodies: Sequence[str], stream_ids: Sequence[str], batch_max: int) -> list[Batch]:
    """The statements of every batch, planned exactly as the worker plans them."""
    source = _Rows()
    batches = []
    for start in range(0, len(bodies), batch_max):
        chunk = range(start, min(start + batch_max, len(bodies)))
        good = [Decoded(stream_ids[i], bodies[i], parse_event(bodies[i])) for i in chunk]
        now = utc_text(dt.datetime.now(dt.UTC))
        planned = plan_batch(good, [], now)
        batch = Batch(last_stream_id=stream_ids[chunk[-1]])
        batch.statements.append((INSERT_EVENT, planned.events))
        batch.statements.extend(plan_projections(planned.changes, source))
        batch.statements.extend(planned.appends)
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
        rows = 0
        started = time.perf_counter()
        for batch in batches:
            con.execute("BEGIN IMMEDIATE")
            for sql, values in batch.statements:
                con.executemany(sql, values)
                rows += len(values)
            con.execute(SET_LAST, (batch.last_stream_id,))
            con.execute("COMMIT")
        seconds = max(time.perf_counter() - started, 1e-9)
    finally:
        con.close()
    return CeilingResult(events, seconds, events / seconds, rows)
