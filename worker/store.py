"""The SQLite store: one transaction per batch, holding log, projections and dead letters.

The worker talks to the store only through :meth:`SqliteStore.commit`, so that a
PostgreSQL store can later stand beside this one without touching the loop.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import anyio

from contracts.events import AnyEvent, parse_event
from worker.errors import DatabaseNewerError
from worker.projections import (
    AUDIT_COLUMNS,
    ENTITIES,
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
from worker.schema import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)

_KEYS_PER_QUERY = 400
# Every table derived from the event log (what `tradescribe db rebuild` recomputes).
PROJECTION_TABLES = (
    *(e.table for e in ENTITIES),
    "trade_status_history",
    "journal_entries",
    "audit_log",
)


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


def _subject(event: AnyEvent) -> str | None:
    data = event.data
    for name in ("trade_id", "signal_id", "position_id", "symbol", "date"):
        value = getattr(data, name, None)
        if value is not None:
            return str(value)
    return None


def _insert(table: str, columns: Sequence[str], verb: str = "INSERT OR IGNORE") -> str:
    marks = ", ".join("?" * len(columns))
    return f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({marks})"


def _upsert(entity: Entity) -> str:
    """Insert a merged row, or update the stored one in place (cheaper than REPLACE,
    which deletes and re-inserts every index entry)."""
    values = ", ".join(f"{c} = excluded.{c}" for c in entity.all_columns if c not in entity.key)
    return f"{_insert(entity.table, entity.all_columns, 'INSERT')} " + (
        f"ON CONFLICT ({', '.join(entity.key)}) DO UPDATE SET {values}"
    )


_INSERT_EVENT = _insert(
    "events",
    (
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
    ),
)
_INSERT_DEAD = _insert(
    "dead_letters",
    ("stream_id", "event_id", "raw", "reason", "deliveries", "received_at"),
    "INSERT",
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
        db = self._db
        await db.execute("BEGIN IMMEDIATE")
        try:
            before = db.total_changes
            await db.executemany(_INSERT_EVENT, (_event_row(d, now) for d in good))
            inserted = db.total_changes - before
            await self._project(project(d.event for d in good))
            if dead:
                await db.executemany(
                    _INSERT_DEAD,
                    ((d.stream_id, d.event_id, d.raw, d.reason, d.deliveries, now) for d in dead),
                )
            ids = [x.stream_id for x in good] + [x.stream_id for x in dead]
            last = max(ids, key=stream_order, default=None)
            if last is not None:
                await db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_stream_id', ?)",
                    (last,),
                )
            await db.execute("COMMIT")
        except BaseException:
            await _rollback(db)  # never hide the real error (disk full, locked) behind it
            raise
        return inserted

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
                await self._project(project(parse_event(body) for _, body in rows))
                replayed += len(rows)
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        return replayed

    async def _project(self, projected: Projected) -> None:
        db = self._db
        by_entity: dict[Entity, list[Change]] = defaultdict(list)
        for change in projected.changes:
            by_entity[change.entity].append(change)
        for entity, changes in by_entity.items():
            rows = await self._load(entity, {c.key for c in changes})
            for change in changes:
                row = rows.get(change.key)
                if row is None:
                    row = rows[change.key] = new_row(entity, change.key, change.ts)
                merge(row, change)
            await db.executemany(
                _upsert(entity), (row_values(entity, row) for row in rows.values())
            )
        for table, columns, rows_ in (
            ("trade_status_history", STATUS_HISTORY_COLUMNS, projected.status_history),
            ("journal_entries", JOURNAL_COLUMNS, projected.journal),
            ("audit_log", AUDIT_COLUMNS, projected.audit),
        ):
            if rows_:
                await db.executemany(_insert(table, columns), rows_)

    async def _load(
        self, entity: Entity, keys: Iterable[tuple[Any, ...]]
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
        for prefix, lasts in by_prefix.items():
            for start in range(0, len(lasts), _KEYS_PER_QUERY):
                chunk = lasts[start : start + _KEYS_PER_QUERY]
                marks = ", ".join("?" * len(chunk))
                sql = (
                    f"SELECT {cols} FROM {entity.table} "
                    f"WHERE {prefix_match} AND {entity.key[-1]} IN ({marks})"
                )
                async with self._db.execute(sql, (*prefix, *chunk)) as cur:
                    for record in await cur.fetchall():
                        row = row_from_db(entity, tuple(record))
                        found[tuple(row[k] for k in entity.key)] = row
        return found

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


def stream_order(stream_id: str) -> tuple[int, int]:
    """A Redis stream id as a sortable (milliseconds, sequence) pair."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _event_row(d: Decoded, now: str) -> tuple[Any, ...]:
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
