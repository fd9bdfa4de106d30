"""The SQLite store: one transaction per batch, holding log, projections and dead letters.

The worker talks to the store only through :meth:`SqliteStore.commit`, so that a
PostgreSQL store can later stand beside this one without touching the loop.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import anyio

from contracts.events import parse_event
from worker.batchwrite import (
    DeadLetter,
    Decoded,
    stream_order,
    write_batch,
    write_projections,
)
from worker.errors import DatabaseNewerError
from worker.projections import ENTITIES, project, utc_text
from worker.schema import MIGRATIONS, SCHEMA_VERSION

__all__ = ["PROJECTION_TABLES", "DeadLetter", "Decoded", "SqliteStore", "stream_order"]

log = logging.getLogger(__name__)

# Every table derived from the event log (what `tradescribe db rebuild` recomputes).
PROJECTION_TABLES = (
    *(e.table for e in ENTITIES),
    "trade_status_history",
    "journal_entries",
    "audit_log",
)


def create_private_file(path: Path) -> None:
    """Create the file readable by its owner only, if it does not exist yet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)


class SqliteStore:
    """Owns the one write connection to the database file."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self.migration_backup: str | None = None

    @classmethod
    async def open(
        cls, path: Path, *, synchronous: str = "FULL", busy_timeout_ms: int = 5000
    ) -> SqliteStore:
        create_private_file(path)
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            await db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute(f"PRAGMA synchronous = {synchronous}")
            await db.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            await db.close()
            raise
        return cls(db, path)

    async def close(self) -> None:
        await self._db.close()

    async def schema_version(self) -> int:
        async with self._db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def migrate(self, *, backup_dir: Path | None = None) -> tuple[int, int]:
        """Bring the schema up to date; returns (version before, version after).

        A database that holds data (version > 0) is backed up first, into
        ``backup_dir`` (default: ``backups/`` beside it); the copy's path is
        kept in :attr:`migration_backup`.
        """
        before = await self.schema_version()
        if before > SCHEMA_VERSION:
            raise DatabaseNewerError(
                f"{self.path} has schema version {before}, newer than this tradescribe "
                f"({SCHEMA_VERSION}); upgrade tradescribe before starting the worker"
            )
        if 0 < before < SCHEMA_VERSION:
            from worker.backup import default_backup_dir, take_backup

            to_dir = backup_dir or default_backup_dir(self.path)
            label = f"pre-v{before + 1}-"
            copy = await anyio.to_thread.run_sync(take_backup, self.path, to_dir, 0, label)
            self.migration_backup = copy.path
            log.info("backed up %s to %s before migrating", self.path, copy.path)
        for version in range(before + 1, SCHEMA_VERSION + 1):
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[version - 1]:
                    await self._db.execute(statement)
                await self._db.execute(f"PRAGMA user_version = {version}")
                await self._db.execute("COMMIT")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            log.info("migrated %s to schema version %d", self.path, version)
        return before, SCHEMA_VERSION

    async def commit(self, good: Sequence[Decoded], dead: Sequence[DeadLetter]) -> int:
        """Store one batch in one transaction; returns how many events were new."""
        now = utc_text(dt.datetime.now(dt.UTC))
        try:
            return int(await self._on_thread(write_batch, good, dead, now))
        except BaseException:
            await _rollback(self._db)  # never hide the real error (disk full, locked) behind it
            raise

    async def _on_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(connection, *args)`` on the connection's own thread, in one hop.

        Uses aiosqlite's queue to its thread (``_execute``), so the call is ordered
        with every other statement on this connection.
        """
        db = self._db
        return await db._execute(fn, db._conn, *args)  # type: ignore[no-untyped-call]

    async def rebuild_projections(self, chunk: int = 1000) -> int:
        """Empty every projection and replay the event log into it, in one transaction.

        The same code path as :meth:`commit` (``project`` then ``merge``); returns how
        many events were replayed.
        """
        db = self._db
        await db.execute("BEGIN IMMEDIATE")
        try:
            for table in PROJECTION_TABLES:
                await db.execute(f"DELETE FROM {table}")
            replayed = last = 0
            while True:
                sql = "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?"
                async with db.execute(sql, (last, chunk)) as cur:
                    rows = list(await cur.fetchall())
                if not rows:
                    break
                last = rows[-1][0]
                await self._on_thread(write_projections, project(parse_event(b) for _, b in rows))
                replayed += len(rows)
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        return replayed

    async def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        async with self._db.execute(sql, params) as cur:
            row = await cur.fetchone()
        return row[0] if row else None


async def _rollback(db: aiosqlite.Connection) -> None:
    """Roll back if a transaction is still open; SQLite ends some on its own (SQLITE_FULL)."""
    if db.in_transaction:
        try:
            await db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.warning("rollback failed: %s", exc)
