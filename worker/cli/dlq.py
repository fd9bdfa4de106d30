"""``tradescribe dlq``: look at dead letters, replay them after a fix, purge old ones.

Replay publishes the dead letter's raw body to the stream again, exactly as it
arrived, so that after an upgrade (or a fixed contract) the worker takes it like
any other event; the event log refuses an id it already holds, so replaying twice
stores nothing twice. A body that is still bad is simply dead-lettered again.

The single-writer rule: the worker owns every write that carries trading data.
``replay`` and ``purge`` touch only the ``dead_letters`` table, in one short
transaction with a busy timeout; the worker takes its write lock per batch and
retries on "database is locked", so it waits at most that long and loses nothing.
On PostgreSQL (``--db postgresql://...``) the same statements run in one transaction
of their own; the rows they change are ones the worker never updates.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from typing import Annotated, Any

import redis
import typer
from rich.console import Console
from rich.table import Table

from contracts.events import WIRE_FIELD
from contracts.partitions import stream_for_wire
from contracts.query_db import connect_postgres, pg_marks, psycopg_module
from contracts.query_model import QueryError
from contracts.redisclient import sync_client
from contracts.redisurl import mask_url
from worker.cli.options import ConfigOpt, DbOpt, JsonOpt, RedisOpt, StreamOpt
from worker.cli.output import cell, terminal_text
from worker.errors import WorkerError
from worker.settings import Settings, load_settings
from worker.store.projections import utc_text

dlq_app = typer.Typer(
    help="Dead letters: list, show, replay after a fix, purge old ones.",
    no_args_is_help=True,
)

_COLUMNS = "id, stream_id, event_id, reason, deliveries, received_at, replayed_at"


class DeadLetterError(WorkerError):
    """A dead-letter command cannot do what was asked."""


class _Db:
    """The dead letters' table on either engine: reads, and one write transaction."""

    def __init__(self, con: Any, postgres: bool) -> None:
        self.con = con
        self.postgres = postgres

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        cur = self.con.execute(pg_marks(sql) if self.postgres else sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def write(self, sql: str, params: list[tuple[Any, ...]]) -> int:
        """Run ``sql`` once per parameter tuple in one transaction; rows changed."""
        if self.postgres:
            with self.con.transaction(), self.con.cursor() as cur:
                changed = 0
                for one in params:
                    cur.execute(pg_marks(sql), one)
                    changed += cur.rowcount
                return changed
        self.con.execute("BEGIN IMMEDIATE")
        changed = sum(self.con.execute(sql, one).rowcount for one in params)
        self.con.execute("COMMIT")
        return changed


@contextlib.contextmanager
def _connect(settings: Settings, *, write: bool = False) -> Iterator[_Db]:
    if settings.database_url is not None:
        with _connect_postgres(settings.database_url, write) as db:
            yield db
        return
    if not settings.db.is_file():
        raise DeadLetterError(f"database {settings.db} does not exist (fix --db or TRADESCRIBE_DB)")
    mode = "rw" if write else "ro"
    con = sqlite3.connect(f"file:{settings.db}?mode={mode}", uri=True, isolation_level=None)
    try:
        con.execute(f"PRAGMA busy_timeout = {int(settings.busy_timeout_ms)}")
        yield _Db(con, postgres=False)
    except sqlite3.OperationalError as exc:
        raise DeadLetterError(
            f"database {settings.db}: {exc} (is the worker busy? try again)"
        ) from None
    finally:
        con.close()


@contextlib.contextmanager
def _connect_postgres(url: str, write: bool) -> Iterator[_Db]:
    try:
        con = connect_postgres(url, read_only=not write)
    except QueryError as exc:
        raise DeadLetterError(str(exc)) from None
    psycopg = psycopg_module()
    try:
        yield _Db(con, postgres=True)
    except psycopg.errors.UndefinedTable:
        raise DeadLetterError(
            f"{mask_url(url)} holds no dead_letters table: not a tradescribe database, or "
            "not migrated yet (tradescribe db migrate --db URL)"
        ) from None
    except psycopg.OperationalError as exc:
        raise DeadLetterError(f"{mask_url(url)}: {str(exc).strip()} (try again)") from None
    finally:
        con.close()


def _text(raw: bytes | str) -> str:
    return raw if isinstance(raw, str) else raw.decode(errors="backslashreplace")


@dlq_app.command("list")
def list_(
    config: ConfigOpt = None,
    db: DbOpt = None,
    limit: Annotated[int, typer.Option(min=1, help="Most rows shown (newest first).")] = 50,
    replayed: Annotated[bool, typer.Option(help="Also show rows already replayed.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List dead letters, newest first, with why each was refused."""
    settings = load_settings(config, db=db)
    where = "" if replayed else "WHERE replayed_at IS NULL"
    with _connect(settings) as con:
        rows = con.rows(f"SELECT {_COLUMNS} FROM dead_letters {where} ORDER BY id DESC LIMIT ?",
                        (limit,))  # fmt: skip
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("id", "received", "stream id", "event id", "reason", "replayed")
    for r in rows:
        table.add_row(*map(cell, (r["id"], r["received_at"], r["stream_id"], r["event_id"],
                                  r["reason"][:100], r["replayed_at"])))  # fmt: skip
    Console().print(table)
    if not rows:
        typer.echo("no dead letters")


@dlq_app.command()
def show(
    dead_letter_id: Annotated[int, typer.Argument(metavar="ID", help="Dead letter id.")],
    config: ConfigOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one dead letter in full: reason and raw body."""
    settings = load_settings(config, db=db)
    with _connect(settings) as con:
        sql = f"SELECT {_COLUMNS}, raw_size, raw_sha256, raw FROM dead_letters WHERE id = ?"
        rows = con.rows(sql, (dead_letter_id,))
    if not rows:
        raise DeadLetterError(
            f"no dead letter with id {dead_letter_id} (see: tradescribe dlq list)"
        )
    row = rows[0]
    row["raw"] = _text(row["raw"])
    if as_json:
        typer.echo(json.dumps(row, indent=2))
        return
    for key, value in row.items():
        if key != "raw":
            typer.echo(f"{key}: {terminal_text(value if value is not None else '')}")
    typer.echo("raw:")
    typer.echo(terminal_text(row["raw"]))


@dlq_app.command()
def replay(
    ids: Annotated[
        list[int] | None, typer.Argument(metavar="[ID]...", help="Ids to replay.")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every row not yet replayed.")] = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
    redis_url: RedisOpt = None,
    stream: StreamOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Publish dead letters' raw bodies to the stream again and mark them replayed."""
    if not ids and not all_:
        raise DeadLetterError("name the dead letters to replay (IDs), or pass --all")
    settings = load_settings(config, db=db, redis_url=redis_url, stream=stream)
    with _connect(settings) as con:
        # An oversized entry kept only its first bytes (raw_sha256 says so): never replayed.
        if all_:
            rows = con.rows("SELECT id, raw FROM dead_letters WHERE replayed_at IS NULL "
                            "AND raw_sha256 IS NULL ORDER BY id")  # fmt: skip
        else:
            marks = ", ".join("?" * len(ids or []))
            rows = con.rows(f"SELECT id, raw, raw_sha256 FROM dead_letters "
                            f"WHERE id IN ({marks}) ORDER BY id", tuple(ids or []))  # fmt: skip
            missing = sorted(set(ids or []) - {r["id"] for r in rows})
            if missing:
                raise DeadLetterError(
                    f"no dead letter with id {missing} (see: tradescribe dlq list)"
                )
            partial = sorted(r["id"] for r in rows if r["raw_sha256"])
            if partial:
                raise DeadLetterError(
                    f"dead letter {partial} kept only the first bytes of an oversized entry "
                    "(see raw_size and raw_sha256 in `tradescribe dlq show`); it cannot be "
                    "replayed: publish the event again from its source"
                )
    replayed = _publish(settings, rows)
    with _connect(settings, write=True) as con:
        con.write(
            "UPDATE dead_letters SET replayed_at = ? WHERE id = ?",
            [(utc_text(dt.datetime.now(dt.UTC)), i) for i in replayed],
        )
    if as_json:
        typer.echo(json.dumps({"replayed": replayed}))
    else:
        typer.echo(f"replayed {len(replayed)} dead letters to {settings.stream}")


def _publish(settings: Settings, rows: list[dict[str, Any]]) -> list[int]:
    client = sync_client(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        pipe = client.pipeline(transaction=False)
        for r in rows:
            stream = stream_for_wire(settings.stream, r["raw"], settings.partitions)
            pipe.xadd(stream, {WIRE_FIELD: r["raw"]})
        pipe.execute()
    except redis.RedisError as exc:
        raise DeadLetterError(
            f"cannot publish to Redis at {mask_url(settings.redis_url)}: {exc}; nothing was "
            "marked replayed (check the URL and that redis-server runs)"
        ) from None
    finally:
        client.close()
    return [r["id"] for r in rows]


@dlq_app.command()
def purge(
    before: Annotated[str, typer.Option("--before", help="Delete rows received before this "
                                        "date or time (ISO 8601, UTC if no offset).")],
    config: ConfigOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Delete dead letters received before a date."""
    try:
        moment = dt.datetime.fromisoformat(before)
    except ValueError:
        raise DeadLetterError(
            f"--before {before!r} is not a date; use e.g. 2026-01-31 or 2026-01-31T12:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    settings = load_settings(config, db=db)
    with _connect(settings, write=True) as con:
        deleted = con.write("DELETE FROM dead_letters WHERE received_at < ?", [(utc_text(moment),)])
    if as_json:
        typer.echo(json.dumps({"deleted": deleted}))
    else:
        typer.echo(f"deleted {deleted} dead letters received before {utc_text(moment)}")
