"""Running a planned batch: one transaction of plain ``sqlite3`` calls.

Only the standard library, so that the write process (``worker.writer``) starts
in a fraction of a second and holds little memory; :mod:`worker.plan` builds
the :class:`Prepared` batches this module writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Statement = tuple[str, list[tuple[Any, ...]]]


def insert_sql(table: str, columns: Sequence[str], verb: str = "INSERT OR IGNORE") -> str:
    marks = ", ".join("?" * len(columns))
    return f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({marks})"


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
SET_LAST = "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_stream_id', ?)"


def writer_pragmas(synchronous: str, busy_timeout_ms: int) -> list[str]:
    """What every connection that writes batches sets (the store's and the write process's)."""
    mode = "FULL" if synchronous == "FULL" else "NORMAL"
    return [
        f"PRAGMA busy_timeout = {int(busy_timeout_ms)}",
        f"PRAGMA synchronous = {mode}",
        "PRAGMA foreign_keys = ON",
    ]


@dataclass(slots=True)
class Prepared:
    """One batch, planned: every row of its transaction."""

    events: list[tuple[Any, ...]]
    statements: list[Statement]
    dead: list[tuple[Any, ...]]
    last_stream_id: str | None
    generation: int = 0


def write_prepared(con: sqlite3.Connection, batch: Prepared) -> int:
    """Store one planned batch in one transaction; returns how many events were new.

    Runs on the connection's thread. On any error the transaction is left open
    for the caller to roll back (SQLite may already have ended it on its own).
    """
    con.execute("BEGIN IMMEDIATE")
    inserted = write_rows(con, batch)
    con.execute("COMMIT")
    return inserted


def run_statements(con: sqlite3.Connection, statements: Iterable[Statement]) -> None:
    for sql, params in statements:
        con.executemany(sql, params)


def write_rows(con: sqlite3.Connection, batch: Prepared) -> int:
    before = con.total_changes
    con.executemany(INSERT_EVENT, batch.events)
    inserted = con.total_changes - before
    run_statements(con, batch.statements)
    if batch.dead:
        con.executemany(INSERT_DEAD, batch.dead)
    if batch.last_stream_id is not None:
        con.execute(SET_LAST, (batch.last_stream_id,))
    return inserted
