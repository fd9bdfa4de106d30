"""The PostgreSQL store: the same calls as :class:`worker.store.sqlite.SqliteStore`, the
same guarantees, one transaction per batch.

A batch commits as: its event rows COPYed into a session table; the entity rows the
batch touches read ``FOR UPDATE``; one ``INSERT ... SELECT ... ON CONFLICT (event_id) DO
NOTHING RETURNING event_id`` (the ids the log took) sent, and while PostgreSQL runs it
the changes merged here in Python by the same :func:`worker.store.rows.merge` (through
the same planner, :func:`worker.store.write.plan_projections`, so ``trade_days``/
``trade_months`` deltas come with it). An id the log held already is a duplicate or,
with another body, an id conflict: a dead letter, its changes dropped and the rest
merged again (as :func:`worker.store.write.write_planned` does). Then the resulting
statements, each INSERT's rows as one statement over column arrays
(:mod:`worker.store.pgbulk`); dead letters; COMMIT. The stream entries are
acknowledged after that, by the loop, as on SQLite.

Why merge in Python rather than in SQL: the merge is per-field versions over a JSON
column plus the terminal-status rule and derived P&L; written again in SQL it would be a
second implementation to keep equal to the first. Reading the rows costs one query
per table per batch. No row cache: a row read inside the transaction is never stale,
whatever another session did.

Only one writer per database: a session advisory lock, held by the connection that
commits (the write process's, :mod:`worker.store.pgwriter`, where there is one).
With stream partitions (docs/scaling.md) one writer per partition: each partition's
store holds that lock shared and its partition's lock alone. Partitions never write the
same row of a projection (every entity and aggregate key holds the event's source, and
a source has one partition); the rows they share are the event log's ids (``ON
CONFLICT DO NOTHING``, PostgreSQL waits for the other transaction), the dead letters
(known by stream and stream id) and ``meta``'s per-partition ``last_stream_id``. A
deadlock or serialization failure there is a store error: retried, never a dead letter.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

try:
    import asyncpg
except ImportError as _missing:  # an extra: SQLite needs none of it
    from worker.errors import ConfigError

    raise ConfigError(
        "PostgreSQL needs the asyncpg driver: pip install 'tradescribe[postgres]'"
    ) from _missing

from contracts.events import parse_event
from worker.errors import AlreadyRunningError, DatabaseNewerError
from worker.store import aggregates, pgbulk, pgsql, pgwriter
from worker.store.batch import DeadLetter, Decoded, append_statements, plan_batch
from worker.store.entities import Entity
from worker.store.projections import ENTITIES, project, utc_text
from worker.store.rows import ENTITY_BY_TABLE, Change, Key, Row, row_from_db
from worker.store.sql import EVENT_COLUMNS, Statement
from worker.store.write import Planned, id_conflict, plan_projections
from worker.store.writer import WriterProcess, encode

log = logging.getLogger(__name__)

PROJECTION_TABLES = (
    *(e.table for e in ENTITIES),
    "trade_status_history",
    "journal_entries",
    "audit_log",
)


class _Fetched:
    """The rows a batch touches, read before the planner merges into them (a
    :class:`worker.store.write.RowSource`)."""

    def __init__(self, rows: dict[str, dict[Key, Row]]) -> None:
        self._rows = rows

    def rows(self, entity: Entity, keys: set[Key]) -> dict[Key, Row]:
        have = self._rows.get(entity.table, {})
        return {k: have[k] for k in keys if k in have}

    def keep(self, entity: Entity, rows: dict[Key, Row]) -> None:
        pass

    def clear(self) -> None:
        pass


def _select_sql(entity: Entity) -> str:
    cols = ", ".join(f"t.{c}" for c in entity.all_columns)
    arrays = ", ".join(f"${i}::text[]" for i in range(1, len(entity.key) + 1))
    keys = ", ".join(entity.key)
    match = " AND ".join(f"t.{k} = k.{k}" for k in entity.key)
    return (
        f"SELECT {cols} FROM {entity.table} t JOIN unnest({arrays}) AS k({keys}) "
        f"ON {match} FOR UPDATE OF t"
    )


class PostgresStore:
    """Owns one connection to a PostgreSQL database, which holds the writer's lock; or,
    with a write process (:mod:`worker.store.pgwriter`), which runs the commits and
    holds the lock on a connection of its own, one for the rest (schema, reads)."""

    migration_backup: str | None = None

    def __init__(
        self,
        con: asyncpg.Connection,
        url: str,
        partition: tuple[int, str] | None = None,
        writer: WriterProcess | None = None,
        name: tuple[int | None, str] = (None, ""),
    ) -> None:
        self._con = con
        self.url = url
        self.writer = writer
        self._name = name  # the session's pid and role, for _connect again
        # (p, its stream) when this store writes one partition; None: the one writer.
        self.partition = partition
        self._dead_stream = partition[1] if partition else ""
        self._last_key = f"last_stream_id:{partition[1]}" if partition else "last_stream_id"
        self._locked = False
        # One operation at a time on the connection: the heartbeat's and status's
        # reads wait for the batch in hand (asyncpg refuses overlapping operations).
        self._turn = anyio.Lock()

    @classmethod
    async def open(
        cls,
        url: str,
        partition: tuple[int, str] | None = None,
        *,
        writer_process: bool = False,
        name_pid: int | None = None,
        role: str = "",
    ) -> PostgresStore:
        """``writer_process``: commit in a child process (started by :meth:`lock_writer`).
        ``name_pid`` and ``role`` name the session as the worker's (``pg_stat_activity``
        and the lock holder's message show them)."""
        writer = pgwriter.handle(url, partition) if writer_process else None
        name = (name_pid, role)
        return cls(await _connect(url, *name), url, partition, writer, name)

    def start_writer(self) -> None:
        """Nothing to start (kept for the loop, which calls it after :meth:`migrate`):
        a write process started with the lock."""

    async def close(self) -> None:
        if self.writer is not None:
            await anyio.to_thread.run_sync(self.writer.close)
        if not self._con.is_closed():
            await self._con.close()

    async def stage(self) -> None:
        """The session's table for a batch's event rows (a write process's connection
        makes it before its first batch)."""
        async with self._turn:
            await (await self._connected()).execute(pgsql.STAGE)

    # -- the one writer ---------------------------------------------------------------

    async def lock_writer(self, identity: dict[str, Any]) -> None:
        """Take the database's writer lock, or raise AlreadyRunningError naming who has it.
        With a write process: start it, and it takes the lock on its connection."""
        if self.writer is not None:
            await self.writer.start_async()  # the event loop's thread stays: the death signal
            return
        async with self._turn:
            await self._lock()

    async def _lock(self) -> None:
        con = self._con
        if self.partition is None:
            if await con.fetchval("SELECT pg_try_advisory_lock($1, $2)", *pgsql.LOCK_KEYS):
                self._locked = True
                return
            who = await _holder(con, pgsql.LOCK_KEYS)
            raise AlreadyRunningError(
                f"another worker, {who}, is writing to this PostgreSQL database; stop it "
                "first, or give this one another database"
            )
        if not await con.fetchval("SELECT pg_try_advisory_lock_shared($1, $2)", *pgsql.LOCK_KEYS):
            who = await _holder(con, pgsql.LOCK_KEYS)
            raise AlreadyRunningError(
                f"a single-stream worker, {who}, is writing to this PostgreSQL database; "
                "stop it before starting workers with partitions"
            )
        mine = (pgsql.PARTITION_LOCK_CLASS, self.partition[0])
        if not await con.fetchval("SELECT pg_try_advisory_lock($1, $2)", *mine):
            who = await _holder(con, mine)
            await con.execute("SELECT pg_advisory_unlock_shared($1, $2)", *pgsql.LOCK_KEYS)
            raise AlreadyRunningError(
                f"another worker, {who}, is writing partition {self.partition[1]}"
            )
        self._locked = True

    async def unlock_writer(self) -> None:
        if self.writer is not None:
            # Its lock goes with its session, before it exits; waited for on a thread, so
            # that the other partitions' lanes on this event loop go on meanwhile.
            await anyio.to_thread.run_sync(self.writer.close)
        if self._locked and not self._con.is_closed():
            async with self._turn:
                if self.partition is None:
                    await self._con.execute("SELECT pg_advisory_unlock($1, $2)", *pgsql.LOCK_KEYS)
                else:
                    await self._con.execute(
                        "SELECT pg_advisory_unlock($1, $2), pg_advisory_unlock_shared($3, $4)",
                        pgsql.PARTITION_LOCK_CLASS,
                        self.partition[0],
                        *pgsql.LOCK_KEYS,
                    )
        self._locked = False

    async def _connected(self) -> asyncpg.Connection:
        """The connection, opened again after it was lost (the server restarted, the
        session was terminated), with the writer's lock and the session's table again.

        The lock lost meanwhile to another worker is an outage of this store (OSError:
        retried, nothing acknowledged), never the batch's fault."""
        if not self._con.is_closed():
            return self._con
        con = await _connect(self.url, *self._name)
        self._con = con
        if self._locked:
            self._locked = False
            try:
                await self._lock()
            except AlreadyRunningError as exc:
                # Still this store's to write under the lock: the next try takes it again
                # (left False, the next reconnect wrote without the lock).
                self._locked = True
                await con.close()
                raise ConnectionError(f"reconnected, but not the writer any more: {exc}") from exc
        await con.execute(pgsql.STAGE)
        return con

    # -- schema -----------------------------------------------------------------------

    async def schema_version(self) -> int:
        async with self._turn:
            return await self._version(await self._connected())

    async def _version(self, con: asyncpg.Connection) -> int:
        if await con.fetchval("SELECT to_regclass('schema_migrations')") is None:
            return 0
        return int(await con.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))

    async def migrate(self, *, backup_dir: Path | None = None) -> tuple[int, int]:
        """Bring the schema up to date, each migration in its own transaction; returns
        (version before, version after). No automatic backup: take a ``pg_dump`` first
        (docs/postgresql.md); ``backup_dir`` is not used."""
        async with self._turn:
            con = await self._connected()
            # Workers starting together: one migrates, the others then find it done.
            await con.execute("SELECT pg_advisory_lock($1, $2)", *pgsql.MIGRATE_LOCK_KEYS)
            try:
                return await self._migrate(con)
            finally:
                await con.execute("SELECT pg_advisory_unlock($1, $2)", *pgsql.MIGRATE_LOCK_KEYS)

    async def _migrate(self, con: asyncpg.Connection) -> tuple[int, int]:
        before = await self._version(con)
        if before > pgsql.SCHEMA_VERSION:
            raise DatabaseNewerError(
                f"this PostgreSQL database has schema version {before}, newer than this "
                f"tradescribe ({pgsql.SCHEMA_VERSION}); upgrade tradescribe first"
            )
        for version in range(before + 1, pgsql.SCHEMA_VERSION + 1):
            async with con.transaction():
                await con.execute(pgsql.VERSION_TABLE)
                await con.execute(pgsql.MIGRATIONS[version - 1])
                await con.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                    version,
                    utc_text(dt.datetime.now(dt.UTC)),
                )
            log.info("migrated PostgreSQL to schema version %d", version)
        await con.execute(pgsql.STAGE)
        return before, pgsql.SCHEMA_VERSION

    # -- batches ----------------------------------------------------------------------

    def prepare(self, good: Sequence[Decoded], dead: Sequence[DeadLetter]) -> Planned | bytes:
        """A batch's rows and changes (pure), for :meth:`commit_planned`; pickled
        already for a write process."""
        planned = plan_batch(good, dead, utc_text(dt.datetime.now(dt.UTC)))
        return encode(planned) if self.writer is not None else planned

    async def commit_planned(self, batch: Planned | bytes) -> tuple[int, int]:
        """Store a batch in one transaction; returns (events new to the log, id conflicts).
        On an error nothing of it is stored (and the error is raised)."""
        if self.writer is not None:
            return await self.writer.write(batch)
        assert isinstance(batch, Planned), "pickled for a write process this store lacks"
        async with self._turn:
            con = await self._connected()
            async with con.transaction():
                return await _write(con, batch, self._dead_stream, self._last_key)

    async def commit(self, good: Sequence[Decoded], dead: Sequence[DeadLetter]) -> tuple[int, int]:
        return await self.commit_planned(self.prepare(good, dead))

    async def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        async with self._turn:
            con = await self._connected()
            return await con.fetchval(pgsql.translate(sql), *params)

    async def rebuild_projections(self, chunk: int = 1000) -> int:
        """Empty every projection and replay the event log into it, in one transaction."""
        async with self._turn:
            con = await self._connected()
            async with con.transaction():
                return await replay(con, chunk)


async def _connect(url: str, pid: int | None = None, role: str = "") -> asyncpg.Connection:
    who = f"{pid or os.getpid()} {role}".strip()
    name = f"tradescribe pid {who} on {socket.gethostname()}"[:63]
    con: asyncpg.Connection = await asyncpg.connect(url, server_settings={"application_name": name})
    return con


async def _holder(con: asyncpg.Connection, keys: tuple[int, int]) -> str:
    """The session holding an advisory lock, as a person may see it."""
    holder = await con.fetchrow(pgsql.LOCK_HOLDER, *keys)
    if not holder:
        return "another session"
    addr = holder["client_addr"]
    return (
        f"{holder['application_name'] or 'a session'} (server pid {holder['pid']}"
        f"{', from ' + addr if addr else ''})"
    )


async def _write(
    con: asyncpg.Connection, batch: Planned, dead_stream: str, last_key: str
) -> tuple[int, int]:
    changes, appends, dead = batch.changes, batch.appends, batch.dead
    conflicts = 0
    # The rows every change touches, locked; then the event log's INSERT goes out and,
    # while PostgreSQL runs it, the changes are merged here as if every event were new
    # (they are, but for a redelivery): the two biggest parts of a batch overlap.
    if batch.events:
        await con.copy_records_to_table(
            "events_in",
            records=[(i, *row) for i, row in enumerate(batch.events)],
            columns=("ord", *EVENT_COLUMNS),
        )
    rows = await _rows_for(con, changes)
    new: set[str] = set()
    async with anyio.create_task_group() as tg:
        if batch.events:
            tg.start_soon(_insert_events, con, new)
            await anyio.lowlevel.checkpoint()  # the INSERT is on its way
        statements = plan_projections(changes, _Fetched(rows))
    inserted = len(new)
    if inserted != len(batch.events):  # some ids were in the log already
        refused, conflicted = await _not_new(con, batch.events, new)
        changes = [c for c in changes if c.event_id not in refused]
        appends = [(sql, [r for r in kept if r[0] not in refused]) for sql, kept in appends]
        dead = [*dead, *conflicted]
        conflicts = len(conflicted)
        # Merged again without them, into the rows as stored (the merge above changed
        # its copies in place).
        statements = plan_projections(changes, _Fetched(await _rows_for(con, changes)))
    await _run(con, statements)
    await _run(con, appends)
    if dead:
        await con.executemany(pgsql.INSERT_DEAD, [(*d, dead_stream) for d in dead])
    if batch.last_stream_id is not None:
        await con.execute(pgsql.SET_LAST, last_key, batch.last_stream_id)
    return inserted, conflicts


async def _insert_events(con: asyncpg.Connection, new: set[str]) -> None:
    """The batch's event rows (COPYed into the session table) into the log; ``new``
    gets the ids it took."""
    new.update(r[0] for r in await con.fetch(pgsql.INSERT_EVENTS))


async def _not_new(
    con: asyncpg.Connection, events: list[tuple[Any, ...]], new: set[str]
) -> tuple[set[str], list[tuple[Any, ...]]]:
    """Of a batch's event rows, the ids the log held already, and the dead letters of
    those whose stored body differs (the rule of ``worker.store.write._not_new``)."""
    refused = [row for row in events if row[0] not in new]
    stored = {
        r["event_id"]: (r["stream_id"], r["body"])
        for r in await con.fetch(pgsql.STORED_BODIES, [row[0] for row in refused])
    }
    conflicts = (id_conflict(row, stored.get(row[0])) for row in refused)
    dead = [c for c in conflicts if c is not None]
    return {row[0] for row in refused}, dead


async def _rows_for(
    con: asyncpg.Connection, changes: Iterable[Change]
) -> dict[str, dict[Key, Row]]:
    """The stored rows of every entity key these changes touch, locked until COMMIT."""
    keys: dict[str, set[Key]] = {}
    for change in changes:
        keys.setdefault(change.table, set()).add(change.key)
    found: dict[str, dict[Key, Row]] = {}
    for table, wanted in keys.items():
        entity = ENTITY_BY_TABLE[table]
        # Keys are text columns: a key as its text finds the row, and maps it back to
        # the key the planner holds.
        as_text = {tuple(str(v) for v in key): key for key in wanted}
        columns = [list(column) for column in zip(*as_text, strict=True)]
        width = len(entity.key)
        found[table] = {
            as_text[tuple(record[:width])]: row_from_db(entity, tuple(record))
            for record in await con.fetch(_select_sql(entity), *columns)
        }
    return found


# Per connection: its database's column types (read once), for pgbulk's array casts.
_TYPES: weakref.WeakKeyDictionary[asyncpg.Connection, pgbulk.ColumnTypes] = (
    weakref.WeakKeyDictionary()
)


async def _run(con: asyncpg.Connection, statements: Iterable[Statement]) -> None:
    """Run the planner's statements: an INSERT's rows as one statement over column
    arrays (:mod:`worker.store.pgbulk`), anything else row by row."""
    types = _TYPES.get(con)
    for sql, params in statements:
        if not params:
            continue
        pg_sql = pgsql.translate(sql)
        if types is None:
            types = _TYPES[con] = pgbulk.column_types(await con.fetch(pgbulk.COLUMN_TYPES_SQL))
        bulk = pgbulk.bulk_of(pg_sql, types)
        if bulk is None or pgbulk.repeats_a_key(bulk, params):
            await con.executemany(pg_sql, params)
        else:
            await con.execute(bulk.sql, *pgbulk.as_columns(params))


async def replay(con: asyncpg.Connection, chunk: int) -> int:
    """Inside the caller's transaction: empty the projections, replay the log into
    them (the worker's code path: ``project`` then ``merge``), sum the aggregates afresh;
    returns how many events were replayed."""
    for table in PROJECTION_TABLES:
        await con.execute(f"DELETE FROM {table}")
    replayed = last = 0
    while True:
        rows = await con.fetch(
            "SELECT seq, body FROM events WHERE seq > $1 ORDER BY seq LIMIT $2", last, chunk
        )
        if not rows:
            break
        last = rows[-1]["seq"]
        projected = project(parse_event(r["body"]) for r in rows)
        source = _Fetched(await _rows_for(con, projected.changes))
        await _run(con, plan_projections(projected.changes, source, aggregates=False))
        await _run(con, append_statements(projected))
        replayed += len(rows)
    for sql in pgsql.RESUM:
        await con.execute(sql)
    # As SQLite's rebuild does: every month may have changed, so a reader keeping the
    # sums of settled months (``contracts.query_stats``) must read them again.
    await con.execute(pgsql.translate(aggregates.BUMP_SETTLED), aggregates.SETTLED_CHANGED, "1")
    return replayed
