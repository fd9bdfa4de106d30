"""The SQLite store: one transaction per batch, holding log, projections and dead letters.

The worker talks to the store only through :meth:`SqliteStore.prepare` and
:meth:`SqliteStore.commit_planned` (or :meth:`SqliteStore.commit`, both in one), so
that a PostgreSQL store can later stand beside this one without touching the loop.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import anyio

from contracts.events import parse_event
from worker.errors import DatabaseNewerError
from worker.lease import FileLock
from worker.store import aggregates
from worker.store.backup import default_backup_dir, take_backup
from worker.store.batch import DeadLetter, Decoded, append_statements, plan_batch, stream_order
from worker.store.dbpath import create_private_file
from worker.store.projections import ENTITIES, project, utc_text
from worker.store.schema import MIGRATIONS, SCHEMA_VERSION
from worker.store.sql import WalBound, run_statements, writer_pragmas
from worker.store.write import DbRows, Planned, RowCache, plan_projections, write_planned
from worker.store.writer import WriterProcess, encode

# A batch ready to commit: planned, and pickled already when a write process takes it.
Prepared = Planned | bytes

__all__ = ["PROJECTION_TABLES", "DeadLetter", "Decoded", "SqliteStore", "stream_order"]

log = logging.getLogger(__name__)

# Every table derived from the event log (what `tradescribe db rebuild` recomputes).
PROJECTION_TABLES = (
    *(e.table for e in ENTITIES),
    "trade_status_history",
    "journal_entries",
    "audit_log",
)


class SqliteStore:
    """Owns the one write connection to the database file."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        con: sqlite3.Connection,
        path: Path,
        cache_rows: int = 20_000,
        writer: WriterProcess | None = None,
    ) -> None:
        # Single statements go through aiosqlite. A function of many statements (a
        # batch's merge and commit without a write process, a rebuild) runs on ``con``
        # in a worker thread, one at a time: aiosqlite has no public way to run a
        # function against its own connection on its thread.
        self._db = db
        self._con = con
        self._one_at_a_time = anyio.CapacityLimiter(1)
        self.path = path
        # Batches are merged and committed by this child process when there is one,
        # else on ``con``, with these rows (see worker/store/writer.py for why).
        self.writer = writer
        self.migration_backup: str | None = None
        self.cache = RowCache(con, cache_rows)
        self._wal = WalBound(f"{path}-wal")
        self._lock: FileLock | None = None

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        synchronous: str = "FULL",
        busy_timeout_ms: int = 5000,
        cache_rows: int = 20_000,
        writer_process: bool = False,
    ) -> SqliteStore:
        create_private_file(path)
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode = WAL")  # kept in the file
            for pragma in writer_pragmas(synchronous, busy_timeout_ms):
                await db.execute(pragma)
            con = await anyio.to_thread.run_sync(_connect, path, synchronous, busy_timeout_ms)
        except BaseException:
            await db.close()
            raise
        writer = (
            WriterProcess.sqlite(path, synchronous, busy_timeout_ms, cache_rows)
            if writer_process
            else None
        )
        return cls(db, con, path, cache_rows, writer)

    async def lock_writer(self, identity: dict[str, Any]) -> None:
        """The only writer of this file on this host: ``<db>.lock`` (see worker/lease.py)."""
        self._lock = FileLock(self.path, identity)
        self._lock.acquire()

    async def unlock_writer(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def start_writer(self) -> None:
        """Start the write process (after :meth:`migrate`: it writes to the current schema)."""
        if self.writer is None:
            return
        try:
            self.writer.start()
        except OSError as exc:  # started again at the first commit, which retries
            log.warning("the write process did not start (%s); trying again at the first commit",
                        exc)  # fmt: skip

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        await self._run(sqlite3.Connection.close)
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

    def prepare(self, good: Sequence[Decoded], dead: Sequence[DeadLetter]) -> Prepared:
        """A batch's rows and changes (pure, in the event loop's thread, while the batch
        before it commits), for :meth:`commit_planned`. Batches must be committed in
        the order they were prepared: each merges into the rows the one before left."""
        planned = plan_batch(good, dead, utc_text(dt.datetime.now(dt.UTC)))
        return encode(planned) if self.writer is not None else planned

    async def commit_planned(self, batch: Prepared) -> tuple[int, int]:
        """Merge and store a batch in one transaction; returns how many events were new
        and how many were id conflicts (dead-lettered). On an error nothing of it is
        stored (and the error is raised)."""
        if self.writer is not None:
            new, conflicts = await self.writer.write(batch)
            return new, conflicts
        assert isinstance(batch, Planned), "pickled for a write process this store lacks"
        new, conflicts = await self._run(_write_bounded, batch, self.cache, self._wal)
        return new, conflicts

    async def commit(self, good: Sequence[Decoded], dead: Sequence[DeadLetter]) -> tuple[int, int]:
        """:meth:`prepare` and :meth:`commit_planned` in one."""
        return await self.commit_planned(self.prepare(good, dead))

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(con, *args)`` in a worker thread, never two at once."""
        return await anyio.to_thread.run_sync(fn, self._con, *args, limiter=self._one_at_a_time)

    async def rebuild_projections(self, chunk: int = 1000) -> int:
        """Empty every projection and replay the event log into it, in one transaction.

        The same code path as :meth:`commit` (``project`` then ``merge``); returns how
        many events were replayed.
        """
        self.cache.clear()
        return int(await self._run(_rebuild, chunk))

    async def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        async with self._db.execute(sql, params) as cur:
            row = await cur.fetchone()
        return row[0] if row else None


def _connect(path: Path, synchronous: str, busy_timeout_ms: int) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in writer_pragmas(synchronous, busy_timeout_ms):
        con.execute(pragma)
    return con


def _write_bounded(
    con: sqlite3.Connection, batch: Planned, cache: RowCache, wal: WalBound
) -> tuple[int, int]:
    """:func:`write_planned`, then the WAL kept bounded (as the write process does)."""
    done = write_planned(con, batch, cache)
    with contextlib.suppress(sqlite3.Error):  # committed already; tried again after the next
        wal.after_commit(con)
    return done


def _rebuild(con: sqlite3.Connection, chunk: int) -> int:
    con.execute("BEGIN IMMEDIATE")
    try:
        for table in PROJECTION_TABLES:
            con.execute(f"DELETE FROM {table}")
        replayed = last = 0
        while True:
            sql = "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?"
            rows = con.execute(sql, (last, chunk)).fetchall()
            if not rows:
                break
            last = rows[-1][0]
            projected = project(parse_event(body) for _, body in rows)
            run_statements(con, plan_projections(projected.changes, DbRows(con), aggregates=False))
            run_statements(con, append_statements(projected))
            replayed += len(rows)
        # Summed afresh once (the replay leaves them alone), so a rebuild's float sums
        # do not depend on its chunking.
        for sql in aggregates.RESUM:
            con.execute(sql)
        con.execute(aggregates.BUMP_SETTLED, (aggregates.SETTLED_CHANGED, "1"))
        con.execute("COMMIT")
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise
    return replayed
