"""``tradescribe db copy --from FILE.db --to postgresql://...``: an SQLite database moved
over to PostgreSQL, verified, idempotent.

Every table goes over (the event log, the projections, ``trade_days``/``trade_months``,
dead letters, ``meta``), in one PostgreSQL transaction, holding the writer's lock (no
worker writes meanwhile) and reading the file in one read transaction (a worker may go
on writing to the file). Then each table's row count and checksum are computed the same
way on both sides and compared before COMMIT: a difference rolls everything back.

The checksum of a table is the sum, modulo 2**64, of the first 8 bytes of each row's
SHA-256, over a canonical text of its values typed as PostgreSQL's columns are (an
integer, a float's ``repr``, text, bytes as hex): independent of row order, and of
SQLite's storage (a whole REAL kept as an integer reads back as 1.0 on both sides).

Idempotent, and refusing what is not a copy: the event log is the truth (every table is
a function of it). A table whose count and checksum already agree is left alone. The
target's event log and dead letters must be a part of the file's (the same ids with the
same rows): then the events and dead letters it lacks are added (a dead letter's
``replayed_at`` brought up to date) and any other table that differs is replaced by the
file's rows. A target holding an event or dead letter the file has not, or has with
another body, is refused in one line, and nothing is written.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from contracts.redisurl import mask_url
from worker.errors import WorkerError
from worker.store.postgres import PostgresStore
from worker.store.schema import SCHEMA_VERSION

# (table, its key) in the order they go over; the logs first
LOGS = {"events": ("event_id",), "dead_letters": ("stream_id",)}
TABLES: dict[str, tuple[str, ...]] = {
    **LOGS,
    "trades": ("source", "trade_id"),
    "trade_status_history": ("event_id",),
    "signals": ("source", "signal_id"),
    "positions": ("account", "source", "mode", "position_key"),
    "daily_stats": ("account", "source", "plugin_id", "mode", "date"),
    "journal_entries": ("event_id",),
    "audit_log": ("event_id",),
    "trade_days": ("day", "account", "source", "plugin_id", "mode", "strategy"),
    "trade_months": ("month", "account", "source", "plugin_id", "mode", "strategy", "symbol",
                     "side"),
    "meta": ("key",),
}  # fmt: skip
IDENTITY = {"events": "seq", "dead_letters": "id"}
CHUNK = 5000
MASK = (1 << 64) - 1

Advance = Callable[[int], None]


class CopyError(WorkerError):
    """The copy cannot start, or the target holds other data than the file."""


@dataclass
class Column:
    name: str
    kind: str  # PostgreSQL's data_type: bigint, double precision, text, bytea

    @property
    def quoted(self) -> str:
        return f'"{self.name}"'


def _canonical(columns: list[Column], record: Any) -> tuple[Any, ...]:
    """One row's values typed as PostgreSQL's columns (what COPY takes, what is summed)."""
    out: list[Any] = []
    for column, value in zip(columns, record, strict=True):
        if value is None:
            out.append(None)
        elif column.kind == "bigint":
            out.append(int(value))
        elif column.kind == "double precision":
            out.append(float(value) + 0.0)
        elif column.kind == "bytea":
            out.append(value.encode() if isinstance(value, str) else bytes(value))
        else:
            out.append(value if isinstance(value, str) else str(value))
    return tuple(out)


def _row_hash(row: tuple[Any, ...]) -> int:
    text = json.dumps(
        [v.hex() if isinstance(v, bytes) else repr(v) if isinstance(v, float) else v for v in row],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


@dataclass
class Tally:
    rows: int = 0
    checksum: int = 0

    def add(self, row: tuple[Any, ...]) -> None:
        self.rows += 1
        self.checksum = (self.checksum + _row_hash(row)) & MASK

    @property
    def hex(self) -> str:
        return f"{self.checksum:016x}"


# --- the file ------------------------------------------------------------------------


def open_source(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise CopyError(f"{path} does not exist; give the worker's SQLite file with --from")
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        version = int(con.execute("PRAGMA user_version").fetchone()[0])
        if version != SCHEMA_VERSION:
            raise CopyError(
                f"{path} is at schema version {version}, this tradescribe copies version "
                f"{SCHEMA_VERSION}: run `tradescribe db migrate --db {path}` first"
                if version < SCHEMA_VERSION
                else f"{path} is newer (schema {version}) than this tradescribe: upgrade it"
            )
        con.execute("BEGIN")  # one snapshot for every read below
    except sqlite3.DatabaseError as exc:
        con.close()
        raise CopyError(f"{path} is not a tradescribe database: {exc}") from None
    except CopyError:
        con.close()
        raise
    return con


def source_rows(
    con: sqlite3.Connection, table: str, columns: list[Column]
) -> Iterator[tuple[Any, ...]]:
    cur = con.execute(f"SELECT {', '.join(c.quoted for c in columns)} FROM {table}")
    while chunk := cur.fetchmany(CHUNK):
        for record in chunk:
            yield _canonical(columns, record)


def tally_source(
    con: sqlite3.Connection, table: str, columns: list[Column], advance: Advance
) -> Tally:
    tally = Tally()
    for row in source_rows(con, table, columns):
        tally.add(row)
        if tally.rows % CHUNK == 0:
            advance(CHUNK)
    advance(tally.rows % CHUNK)
    return tally


# --- PostgreSQL ----------------------------------------------------------------------


async def target_columns(pg: asyncpg.Connection, table: str) -> list[Column]:
    records = await pg.fetch(
        """SELECT column_name, data_type FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position""",
        table,
    )
    return [Column(r["column_name"], r["data_type"]) for r in records]


async def tally_target(pg: asyncpg.Connection, table: str, columns: list[Column]) -> Tally:
    tally = Tally()
    sql = f"SELECT {', '.join(c.quoted for c in columns)} FROM {table}"
    async for record in pg.cursor(sql, prefetch=CHUNK):
        tally.add(_canonical(columns, record))
    return tally


async def _copy_in(
    pg: asyncpg.Connection, into: str, columns: list[Column], rows: Iterator[tuple[Any, ...]],
    advance: Advance,
) -> int:  # fmt: skip
    names = [c.name for c in columns]
    written = 0
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            await pg.copy_records_to_table(into, records=chunk, columns=names)
            written += len(chunk)
            advance(len(chunk))
            chunk = []
    if chunk:
        await pg.copy_records_to_table(into, records=chunk, columns=names)
        written += len(chunk)
        advance(len(chunk))
    return written


async def _merge_log(
    pg: asyncpg.Connection, table: str, columns: list[Column], rows: Iterator[tuple[Any, ...]],
    advance: Advance, label: str,
) -> int:  # fmt: skip
    """Stage the file's rows of a log; refuse a target row the file has not (or has with
    another body); add what the target lacks. Returns the rows added."""
    key = LOGS[table]
    await pg.execute(f"CREATE TEMP TABLE copy_in (LIKE {table}) ON COMMIT DROP")
    await _copy_in(pg, "copy_in", columns, rows, advance)
    on = " AND ".join(f"s.{k} = t.{k}" for k in key)
    extra = await pg.fetchval(
        f"SELECT count(*) FROM {table} t WHERE NOT EXISTS (SELECT 1 FROM copy_in s WHERE {on})"
    )
    same = [c.quoted for c in columns if c.name != "replayed_at"]
    differ = " OR ".join(f"s.{c} IS DISTINCT FROM t.{c}" for c in same)
    other = await pg.fetchval(
        f"SELECT count(*) FROM {table} t JOIN copy_in s ON {on} WHERE {differ}"
    )
    if extra or other:
        what = (
            f"{extra} {table} rows the file has not"
            if extra
            else f"{other} {table} rows that differ from the file's"
        )
        raise CopyError(
            f"{label} holds other data than the file ({what}); copy into an empty database "
            "(createdb), or drop this one's tables first"
        )
    if table == "dead_letters":
        await pg.execute(
            f"UPDATE dead_letters t SET replayed_at = s.replayed_at FROM copy_in s WHERE {on} "
            "AND t.replayed_at IS DISTINCT FROM s.replayed_at"
        )
    status = await pg.execute(f"INSERT INTO {table} SELECT * FROM copy_in ON CONFLICT DO NOTHING")
    await pg.execute("DROP TABLE copy_in")
    return int(status.rsplit(" ", 1)[1])


# --- the whole copy ------------------------------------------------------------------

# ``progress(what, total)`` gives the function that advances that bar (the CLI's rich
# progress bar; nothing in tests)
Progress = Callable[[str, int], Advance]


def _quiet(what: str, total: int) -> Advance:
    return lambda n: None


async def _connect(url: str) -> PostgresStore:
    try:
        return await PostgresStore.open(url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise CopyError(
            f"cannot connect to PostgreSQL at {mask_url(url)}: {exc}; check --to (the "
            "database must exist: createdb) and that the server runs"
        ) from None


async def copy(path: Path, url: str, progress: Progress = _quiet) -> dict[str, Any]:
    """Copy the SQLite file at ``path`` into the PostgreSQL database at ``url``; the
    per-table counts and checksums of both sides, and what was copied."""
    from worker.lease import worker_identity

    source = open_source(path)
    try:
        store = await _connect(url)
        try:
            await store.lock_writer(worker_identity("tradescribe db copy"))
            await store.migrate()
            pg = await asyncpg.connect(url)
            try:
                async with pg.transaction():
                    tables = await _copy_all(source, pg, mask_url(url), progress)
                for t in tables:  # the planner's statistics: without them a calendar's
                    if t["copied"]:  # range join took 1,266 ms instead of 12 (docs)
                        await pg.execute(f"ANALYZE {t['table']}")
            finally:
                await pg.close()
            await store.unlock_writer()
        finally:
            await store.close()
    finally:
        source.close()
    copied = sum(t["copied"] for t in tables)
    return {"from": str(path), "to": mask_url(url), "copied": copied, "equal": True,
            "tables": tables}  # fmt: skip


async def _copy_all(
    source: sqlite3.Connection, pg: asyncpg.Connection, label: str, progress: Progress
) -> list[dict[str, Any]]:
    columns = {t: await target_columns(pg, t) for t in TABLES}
    counts = {t: int(source.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in TABLES}
    reading = progress("checksums of the file", sum(counts.values()))
    before = {t: tally_source(source, t, columns[t], reading) for t in TABLES}
    after = {t: await tally_target(pg, t, columns[t]) for t in TABLES}
    todo = [t for t in TABLES if before[t] != after[t]]
    copying = progress("copying", sum(counts[t] for t in todo))
    copied = dict.fromkeys(TABLES, 0)
    for t in todo:
        rows = source_rows(source, t, columns[t])
        if after[t].rows == 0:
            copied[t] = await _copy_in(pg, t, columns[t], rows, copying)
        elif t in LOGS:
            copied[t] = await _merge_log(pg, t, columns[t], rows, copying, label)
        else:  # a function of the log, which the file extends: the file's rows
            await pg.execute(f"DELETE FROM {t}")
            copied[t] = await _copy_in(pg, t, columns[t], rows, copying)
    for t, column in IDENTITY.items():  # the worker's next rows number on from the file's
        await pg.execute(
            f"SELECT setval(pg_get_serial_sequence('{t}', '{column}'), "
            f"coalesce((SELECT max({column}) FROM {t}), 0) + 1, false)"
        )
    verified = {t: await tally_target(pg, t, columns[t]) for t in TABLES} if todo else after
    tables: list[dict[str, Any]] = [
        {"table": t, "sqlite_rows": before[t].rows, "postgresql_rows": verified[t].rows,
         "copied": copied[t], "sqlite_checksum": before[t].hex,
         "postgresql_checksum": verified[t].hex, "equal": before[t] == verified[t]}
        for t in TABLES
    ]  # fmt: skip
    unequal = [str(t["table"]) for t in tables if not t["equal"]]
    if unequal:
        raise CopyError(
            f"after copying, {', '.join(unequal)} in {label} differ from the file; nothing "
            "was committed (a worker writing to the database meanwhile?)"
        )
    return tables
