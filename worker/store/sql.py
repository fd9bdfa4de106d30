"""The SQL every writing connection shares: the event log's and dead letters'
inserts, the pragmas, running a list of statements.

Only the standard library, as :mod:`worker.store.write`, so that the write process
(``worker.store.writer``) starts in a fraction of a second and holds little memory.
"""

from __future__ import annotations

import os
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


# The WAL's size at rest: SQLite truncates the file to this when a checkpoint lets the
# next writer start it over. Without it the file keeps the largest size it ever reached
# (48 MiB beside a 9.6 MiB database was seen). A drain's commit adds about 3 MiB and the
# automatic checkpoint runs every 1,000 pages (4 MiB), so this costs no truncations then.
WAL_LIMIT_BYTES = 16 * 2**20
# Past this, checkpoints were starved (readers kept using the WAL, so it could not be
# started over): the writer waits for them once with a RESTART checkpoint.
WAL_RESTART_BYTES = 4 * WAL_LIMIT_BYTES


def writer_pragmas(synchronous: str, busy_timeout_ms: int) -> list[str]:
    """What every connection that writes batches sets (the store's and the write process's)."""
    mode = "FULL" if synchronous == "FULL" else "NORMAL"
    return [
        f"PRAGMA busy_timeout = {int(busy_timeout_ms)}",
        f"PRAGMA synchronous = {mode}",
        "PRAGMA foreign_keys = ON",
        f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}",
    ]


class WalBound:
    """Called after each commit: when the WAL file has grown past ``restart_bytes``,
    checkpoint it and wait briefly (``wait_ms``) for readers to leave it, so that the
    next commit starts it over and SQLite truncates it to :data:`WAL_LIMIT_BYTES`.

    One ``stat`` per commit otherwise. A reader that stays (a long read transaction)
    costs one wait per further ``restart_bytes`` of growth, never one per commit."""

    def __init__(
        self, wal: str, restart_bytes: int = WAL_RESTART_BYTES, wait_ms: int = 200
    ) -> None:
        self.wal = wal
        self.restart_bytes = restart_bytes
        self.wait_ms = wait_ms
        self._next = restart_bytes  # the size at which to try next
        self.restarts = 0  # checkpoints that ran (for tests and logs)

    def after_commit(self, con: sqlite3.Connection) -> None:
        try:
            size = os.stat(self.wal).st_size
        except OSError:
            return
        if size <= self._next:
            if size <= self.restart_bytes:
                self._next = self.restart_bytes  # it was started over: back to the bound
            return
        busy_ms = con.execute("PRAGMA busy_timeout").fetchone()[0]
        con.execute(f"PRAGMA busy_timeout = {int(self.wait_ms)}")
        try:
            busy = con.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
        finally:
            con.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
        self.restarts += 1
        self._next = size + self.restart_bytes if busy else self.restart_bytes


def run_statements(con: sqlite3.Connection, statements: Iterable[Statement]) -> None:
    for sql, params in statements:
        con.executemany(sql, params)
