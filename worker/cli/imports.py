"""``tradescribe import FORMAT PATH...``: legacy records onto the stream, then verified."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import redis
import typer
from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.table import Table

from contracts.client import Client
from contracts.events import SourceName
from contracts.redisclient import sync_client
from contracts.redisurl import mask_url
from worker.cli.options import ConfigOpt, JsonOpt, RedisOpt, StreamOpt
from worker.cli.output import terminal_text
from worker.errors import WorkerError
from worker.importers import FORMATS, ImportContext, csv_mapped, sqlite_legacy
from worker.importers.base import RecordError, timezone
from worker.importers.run import (
    Report,
    collect,
    progress_bar,
    publish,
    stored_ids,
    verify,
    verify_via_worker,
)
from worker.ops.trust import client_key
from worker.settings import Settings, load_settings


class ImportFailedError(WorkerError):
    """An import cannot start (bad format, path, option) or Redis refused it."""


def import_command(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT", help=" | ".join(FORMATS))],
    paths: Annotated[list[Path], typer.Argument(help="Files (plays: files or folders).")],
    config: ConfigOpt = None,
    redis_url: RedisOpt = None,
    db: Annotated[
        str | None,  # a path, or a postgresql:// URL (Path would fold its "//")
        typer.Option(
            "--db",
            help="Database to verify in: file or postgresql:// URL (default: ask the worker).",
            show_default=False,
        ),
    ] = None,
    stream: StreamOpt = None,
    mapping: Annotated[
        Path | None, typer.Option(help="TOML mapping (csv: columns; sqlite-legacy: logic_type).")
    ] = None,
    source: Annotated[
        str | None, typer.Option(help="Source of the events (default legacy.FORMAT).")
    ] = None,
    account: Annotated[str, typer.Option(help="Broker account.")] = "default",
    plugin_id: Annotated[
        str, typer.Option(help="Plugin id (sqlite-legacy maps its own).")
    ] = "legacy",
    mode: Annotated[str, typer.Option(help="live, paper or backtest.")] = "live",
    tz: Annotated[str, typer.Option("--timezone", help="Zone of naive legacy times.")] = "UTC",
    file_id: Annotated[
        str | None, typer.Option(help="Fixed file identity for ids (default: absolute path).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and report only.")] = False,
    allow_skips: Annotated[
        bool, typer.Option("--allow-skips", help="Exit 0 even if records were skipped.")
    ] = False,
    wait_s: Annotated[float, typer.Option(min=0, help="How long to wait for commits.")] = 30.0,
    as_json: JsonOpt = False,
) -> None:
    """Publish legacy records as events, then report what the worker committed.

    Event ids derive from the file and the row, so re-running stores nothing new.
    Exit 1 when counts disagree or records were skipped without --allow-skips.
    """
    if fmt not in FORMATS:
        raise ImportFailedError(f"unknown format {fmt!r}; use one of: {', '.join(FORMATS)}")
    for path in paths:
        if not path.exists():
            raise ImportFailedError(f"{path} does not exist (fix the PATH argument)")
    if mapping is not None and not mapping.is_file():
        raise ImportFailedError(f"mapping file {mapping} does not exist (fix --mapping)")
    if mode not in ("live", "paper", "backtest"):
        raise ImportFailedError(f"--mode {mode!r} must be live, paper or backtest")
    check_mapping(fmt, mapping)
    source = source or f"legacy.{fmt}"
    try:
        TypeAdapter(SourceName).validate_python(source)
        zone = timezone(tz)
    except ValidationError:
        raise ImportFailedError(f"--source {source!r}: use letters, digits and _.:@/-") from None
    except RecordError as exc:
        raise ImportFailedError(f"--timezone: {exc}") from None
    settings = load_settings(config, redis_url=redis_url, db=db, stream=stream)
    ctx = ImportContext(fmt, source, account, plugin_id, mode, zone, mapping, file_id)
    # Without a database here (no --db, TRADESCRIBE_DB or db = in the TOML file), the
    # worker itself says what it committed, over the request channel.
    via_worker = not {"db", "database_url"} & settings.model_fields_set
    report = run_import(ctx, paths, settings, dry_run=dry_run, wait_s=wait_s, via_worker=via_worker)
    problems = report.problems(allow_skips)
    report.ok = not problems
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        print_report(report, problems, Console())
    if problems:
        raise typer.Exit(1)


def check_mapping(fmt: str, mapping: Path | None) -> None:
    """Read the mapping file once up front, so a bad one is one line, not a skip per file."""
    try:
        if fmt == "csv":
            csv_mapped.load_mapping(mapping)
        elif fmt == "sqlite-legacy":
            sqlite_legacy.load_mapping(mapping)
    except RecordError as exc:
        raise ImportFailedError(f"{exc} (give it with --mapping FILE)") from None


def run_import(
    ctx: ImportContext,
    paths: list[Path],
    settings: Settings,
    *,
    dry_run: bool,
    wait_s: float,
    via_worker: bool = False,
) -> Report:
    redis_url, stream = settings.redis_url, settings.stream
    db = settings.database_url or settings.db  # the ids already stored are looked up there
    report = Report(ctx.fmt, [str(p) for p in paths], dry_run)
    console = Console(stderr=True)
    with progress_bar(console) as progress:
        events = collect(ctx.fmt, paths, ctx, progress, report)
        ids = [e.id for e in events]
        already = set() if via_worker else stored_ids(db, ids)
        report.already_stored = len(already)
        if dry_run:
            return report
        new = [e for e in events if e.id not in already]
        client = sync_client(redis_url, socket_timeout=10, socket_connect_timeout=5)
        try:
            report.published = publish(client, stream, new, progress, settings.partitions)
        except redis.RedisError as exc:
            raise ImportFailedError(
                f"cannot publish to Redis at {mask_url(redis_url)}: {exc} "
                "(check --redis-url and that redis-server runs)"
            ) from exc
        finally:
            client.close()
    if via_worker:
        key = client_key(settings)
        clients = [
            Client(redis_url, stream=stream, group=settings.group, channel_key=key)
            for _ in range(4)
        ]
        try:
            verify_via_worker(clients, ids, wait_s, report)
        finally:
            for c in clients:
                c.close()
    else:
        verify(db, ids, wait_s, report)
    return report


def print_report(report: Report, problems: list[str], console: Console) -> None:
    table = Table(title=f"import {report.format}", show_header=False)
    rows = [
        ("records read", report.records_read),
        ("events (valid)", report.events),
        ("already stored before", report.already_stored),
        ("published", report.published),
        ("committed", report.committed),
        ("dead-lettered", report.dead_lettered),
        ("skipped", len(report.skipped)),
    ]
    for name, value in rows:
        if report.dry_run and name in {"published", "committed", "dead-lettered"}:
            continue
        table.add_row(name, str(value))
    console.print(table)
    if report.dry_run:
        console.print("dry run: nothing published")
    for skip in report.skipped[:100]:
        console.print(
            terminal_text(f"skipped {skip.where}: {skip.reason}"),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if len(report.skipped) > 100:
        console.print(f"... and {len(report.skipped) - 100} more (use --json for all)")
    for problem in problems:
        console.print(
            terminal_text(f"FAILED: {problem}"), markup=False, highlight=False, soft_wrap=True
        )
    if not problems:
        done = (
            "would be published"
            if report.dry_run
            else "are in the database"
            if report.verified_by == "database"
            else "are in the worker's database (it said so over the request channel)"
        )
        allowed = f" ({len(report.skipped)} skipped records allowed)" if report.skipped else ""
        console.print(f"OK: all {report.events} valid events {done}{allowed}")
