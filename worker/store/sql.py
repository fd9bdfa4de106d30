"""The SQL every writing connection shares: the event log's and dead letters'
inserts, the pragmas, running a list of statements.

Only the standard library, as :mod:`worker.store.write`, so that the write process
(``worker.store.writer``) starts in a fraction of a second and holds little memory.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
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
# A stream entry is dead-lettered once, however often it is delivered.
INSERT_DEAD = insert_sql(
    "dead_letters",
    (
        "stream_id",
        "event_id",
        "raw",
        "reason",
        "deliveries",
        "received_at",
        "raw_size",
        "raw_sha256",
    ),
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


def run_statements(con: sqlite3.Connection, statements: Iterable[Statement]) -> None:
    for sql, params in statements:
        con.executemany(sql, params)
