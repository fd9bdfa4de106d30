"""``tradescribe db ...``, ``tradescribe backup`` and ``tradescribe restore``."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import anyio
import redis
import typer
from rich.console import Console
from rich.table import Table

from contracts.redisclient import sync_client
from contracts.redisurl import mask_url
from worker.cli.options import ConfigOpt, DbOpt, GroupOpt, JsonOpt, RedisOpt, StreamOpt
from worker.settings import Settings, load_settings
from worker.store import maintenance, pgsql
from worker.store.backup import BackupError, default_backup_dir, restore, take_backup
from worker.store.schema import SCHEMA_VERSION

db_app = typer.Typer(
    help="Schema version, migrations, rebuilding projections, copying to PostgreSQL.",
    no_args_is_help=True,
)


def _target(config: Path | None, db: str | None) -> Path | str:
    """The SQLite file, or the PostgreSQL URL, the settings name."""
    settings = load_settings(config, db=db)
    return settings.db if settings.database_url is None else settings.database_url


def _pg() -> Any:
    """The PostgreSQL maintenance module (imported only for a URL: it needs asyncpg)."""
    from worker.store import pgmaint

    return pgmaint


def _label(target: Path | str) -> str:
    return str(target) if isinstance(target, Path) else mask_url(target)


def _emit(result: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    else:
        for line in lines:
            typer.echo(line)


@db_app.command("version")
def version(config: ConfigOpt = None, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """The database's schema version and this tradescribe's; exit 1 if the database is newer."""
    target = _target(config, db)
    info = (
        maintenance.version_info(target)
        if isinstance(target, Path)
        else anyio.run(_pg().version_info, target)
    )
    _emit(
        info,
        as_json,
        [
            f"{info['db']}: schema version {info['version']} "
            f"(this tradescribe: {info['code_version']}; {info['state']})"
        ],
    )
    if info["version"] > info["code_version"]:
        raise typer.Exit(1)


@db_app.command("migrate")
def migrate(
    config: ConfigOpt = None,
    db: DbOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List pending migrations only.")
    ] = False,
    backup_dir: Annotated[
        Path | None, typer.Option(help="Where the automatic backup goes.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Apply pending migrations (worker stopped), each in a transaction, after a backup."""
    path = _target(config, db)
    if isinstance(path, Path):
        latest = SCHEMA_VERSION
        result = anyio.run(
            lambda: maintenance.migrate(path, dry_run=dry_run, backup_dir=backup_dir)
        )
    else:
        latest = pgsql.SCHEMA_VERSION
        result = anyio.run(lambda: _pg().migrate(path, dry_run=dry_run))
    lines = [
        f"{_label(path)}: schema version {result['before']} -> "
        f"{latest if dry_run else result['after']}"
    ]
    lines += [
        f"  {'would apply' if dry_run else 'applied'} migration {p['version']} "
        f"({p['statements']} statements)"
        for p in result["pending"]
    ]
    if not result["pending"]:
        lines.append("  nothing to do: up to date")
    if result["backup"]:
        lines.append(f"  backup taken first: {result['backup']}")
    _emit(result, as_json, lines)


@db_app.command("rebuild")
def rebuild(
    config: ConfigOpt = None,
    db: DbOpt = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="Rebuild a temporary copy and compare; change nothing."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Recompute every projection from the events log (worker stopped), or --check it."""
    path = _target(config, db)
    engine: Any = maintenance if isinstance(path, Path) else _pg()
    if not check:
        result = anyio.run(engine.rebuild, path)
        counts = ", ".join(f"{t} {n}" for t, n in result["tables"].items())
        _emit(
            result,
            as_json,
            [f"rebuilt {_label(path)} from {result['events_replayed']} events: {counts}"],
        )
        return
    result = anyio.run(engine.rebuild_check, path)
    if as_json:
        _emit(result, True, [])
    else:
        table = Table(
            "table",
            "live",
            "rebuilt",
            "missing",
            "extra",
            title=f"rebuild check of {_label(path)} ({result['events_replayed']} events)",
        )
        for name, t in result["tables"].items():
            table.add_row(name, *(str(t[k]) for k in ("live", "rebuilt", "missing", "extra")))
        Console().print(table)
        typer.echo(
            "EQUAL: the rebuilt projections match"
            if result["equal"]
            else "DIFFERENT: the rebuilt projections do not match the live ones"
        )
    if not result["equal"]:
        raise typer.Exit(1)


@db_app.command("copy")
def copy(
    source: Annotated[
        Path, typer.Option("--from", help="The SQLite database file to copy (worker may run).")
    ],
    to: Annotated[
        str, typer.Option("--to", help="postgresql://user@host/dbname (an existing database).")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Copy an SQLite database into PostgreSQL: every table, verified by row counts and
    checksums on both sides; a second run copies nothing new."""
    from worker.settings import check_postgres_url

    try:
        check_postgres_url(to)
    except ValueError as exc:
        raise BackupError(f"--to {mask_url(to)}: {exc}") from None
    from worker.store import pgcopy

    console = Console(stderr=True)
    with _progress(console, enabled=not as_json) as progress:
        result = anyio.run(lambda: pgcopy.copy(source, to, progress))
    if as_json:
        _emit(result, True, [])
        return
    table = Table("table", "sqlite rows", "postgresql rows", "copied", "checksum", "equal",
                  title=f"db copy {result['from']} -> {result['to']}")  # fmt: skip
    for t in result["tables"]:
        same = t["sqlite_checksum"] == t["postgresql_checksum"]
        checksum = (
            t["sqlite_checksum"] if same else f"{t['sqlite_checksum']} / {t['postgresql_checksum']}"
        )
        table.add_row(t["table"], f"{t['sqlite_rows']:,}", f"{t['postgresql_rows']:,}",
                      f"{t['copied']:,}", checksum, "yes" if t["equal"] else "NO")  # fmt: skip
    Console().print(table)
    rows = sum(t["sqlite_rows"] for t in result["tables"])
    typer.echo(
        f"EQUAL: {len(result['tables'])} tables, {rows:,} rows; copied {result['copied']:,} rows"
    )


@contextlib.contextmanager
def _progress(
    console: Console, enabled: bool
) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """``progress(what, total)``: a rich progress bar per phase, on a terminal only."""
    from rich.progress import MofNCompleteColumn, Progress, TimeRemainingColumn

    shown = enabled and console.is_terminal
    columns = (*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeRemainingColumn())
    bars = Progress(*columns, console=console, disable=not shown, transient=True)

    def start(what: str, total: int) -> Callable[[int], None]:
        task = bars.add_task(what, total=total)
        return lambda n: bars.advance(task, n)

    with bars:
        yield start


def backup(
    config: ConfigOpt = None,
    db: DbOpt = None,
    to: Annotated[
        Path | None,
        typer.Option(
            "--to", help="Folder (default: backups/ beside the db; PostgreSQL: ./backups)."
        ),
    ] = None,
    keep: Annotated[int, typer.Option(min=0, help="Keep the newest N backups (0: all).")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """An online, consistent copy while the worker keeps writing (SQLite's backup API;
    on PostgreSQL, pg_dump)."""
    settings = load_settings(config, db=db)
    if settings.database_url is not None:
        from worker.store import pgbackup

        out = pgbackup.dump(settings.database_url, to or settings.backup_dir or Path("backups"),
                            keep)  # fmt: skip
        lines = [f"backup {out['path']} (pg_dump --format=custom of {out['db']}): "
                 f"{out['events']} events, last stream id {out['last_stream_id']}, "
                 f"{out['bytes']} bytes"]  # fmt: skip
        _emit(out, as_json, lines + [f"removed old backup {p}" for p in out["removed"]])
        return
    to_dir = to or settings.backup_dir or default_backup_dir(settings.db)
    result = take_backup(settings.db, to_dir, keep)
    lines = [
        f"backup {result.path}: {result.events} events, last stream id "
        f"{result.last_stream_id}, integrity {result.integrity}, {result.bytes} bytes"
    ]
    lines += [f"removed old backup {p}" for p in result.removed]
    _emit(asdict(result), as_json, lines)


def restore_command(
    file: Annotated[Path, typer.Argument(help="A backup made by `tradescribe backup`.")],
    config: ConfigOpt = None,
    db: DbOpt = None,
    rewind_group: Annotated[
        bool,
        typer.Option(
            "--rewind-group",
            help="Point the consumer group back at the backup's last stream id, so the "
            "worker re-reads what the stream still holds after it (duplicates are refused).",
        ),
    ] = False,
    redis_url: RedisOpt = None,
    stream: StreamOpt = None,
    group: GroupOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replace the database with a backup (worker stopped; integrity checked first). On
    PostgreSQL: pg_restore of a `tradescribe backup` dump into an empty database."""
    settings = load_settings(config, db=db, redis_url=redis_url, stream=stream, group=group)
    if settings.database_url is not None:
        from worker.store import pgbackup

        result = pgbackup.restore(file, settings.database_url)
        lines = [f"restored {file} into {result['db']} (pg_restore): {result['events']} "
                 f"events, last stream id {result['last_stream_id']}"]  # fmt: skip
        _rewound(result, rewind_group, settings, lines)
        _emit(result, as_json, lines)
        return
    if file.resolve() == settings.db.resolve():
        raise BackupError(f"{file} is the database itself; give a backup file")
    to_dir = settings.backup_dir or default_backup_dir(settings.db)
    result = restore(file, settings.db, to_dir)
    lines = [
        f"restored {file} into {settings.db}: {result['events']} events, "
        f"last stream id {result['last_stream_id']}"
    ]
    if result["previous_saved_as"]:
        lines.append(f"the previous database was saved as {result['previous_saved_as']}")
    _rewound(result, rewind_group, settings, lines)
    _emit(result, as_json, lines)


def _rewound(result: dict[str, Any], wanted: bool, settings: Settings, lines: list[str]) -> None:
    """``--rewind-group``: the group reads again after the backup's last stream id."""
    if wanted:
        last = str(result["last_stream_id"] or "0")
        rewind(settings.redis_url, settings.stream, settings.group, last)
        result["group_rewound_to"] = last
        lines.append(f"group '{settings.group}' of '{settings.stream}' now reads after {last}")


def rewind(redis_url: str, stream: str, group: str, last_id: str) -> None:
    client = sync_client(redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.xgroup_setid(stream, group, last_id)
    except redis.RedisError as exc:
        raise BackupError(
            f"restored, but the group was not rewound ({exc}); run "
            f"`redis-cli XGROUP SETID {stream} {group} {last_id}` before starting the worker"
        ) from exc
    finally:
        client.close()
