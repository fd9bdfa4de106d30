"""``tradescribe worker`` and ``tradescribe demo``: the commands that run the writer,
and the logging they set up."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer

from worker.cli.options import ConfigOpt, DbOpt, GroupOpt, JsonOpt, RedisOpt, StreamOpt
from worker.settings import PG_BATCH_MAX, SQLITE_BATCH_MAX, Settings, load_settings


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        counters = getattr(record, "counters", None)
        if counters is not None:
            entry["counters"] = counters
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)


def worker(
    config: ConfigOpt = None,
    redis_url: RedisOpt = None,
    db: DbOpt = None,
    stream: StreamOpt = None,
    group: GroupOpt = None,
    consumer: Annotated[
        str | None, typer.Option(help="Consumer name (default: host name).")
    ] = None,
    batch_max: Annotated[
        int | None,
        typer.Option(
            help=f"Most events per transaction (default: {SQLITE_BATCH_MAX} on SQLite, "
            f"{PG_BATCH_MAX} on PostgreSQL)."
        ),
    ] = None,
    partitions: Annotated[
        int | None,
        typer.Option(help="Partition streams shared with other workers (PostgreSQL only)."),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = None,
    log_format: Annotated[str | None, typer.Option(help="text or json (journald).")] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port (127.0.0.1).")
    ] = None,
) -> None:
    """Run the single writer in the foreground (what systemd runs).

    Reads the stream through a consumer group, commits each batch in one SQLite
    transaction, acknowledges after the commit. SIGTERM or Ctrl-C: the batch in
    hand is committed, then it exits 0.
    """
    from worker.service import run_worker
    from worker.store.dbpath import check_worker_database
    from worker.store.writer import tune_gc

    settings = load_settings(
        config,
        redis_url=redis_url,
        db=db,
        stream=stream,
        group=group,
        consumer=consumer,
        batch_max=batch_max,
        partitions=partitions,
        log_level=log_level,
        log_format=log_format,
        metrics_port=metrics_port,
    )
    if settings.database_url is None:  # PostgreSQL: the connection itself says what is wrong
        check_worker_database(settings.db)
    setup_logging(settings)
    tune_gc()
    anyio.run(lambda: run_worker(settings))


def demo(
    redis_url: Annotated[
        str | None,
        typer.Option(help="Use this Redis instead of starting an embedded one."),
    ] = None,
    db: Annotated[Path, typer.Option(help="Database to write (recreated each run).")] = Path(
        "tradescribe-demo/demo.db"
    ),
    seconds: Annotated[float, typer.Option(min=0.5, max=3600, help="How long bots run.")] = 5.0,
    bots: Annotated[int, typer.Option(min=1, max=50, help="Simulated bots.")] = 3,
    as_json: JsonOpt = False,
    port: Annotated[int, typer.Option(help="Dashboard port (taken: a free one).")] = 8470,
    dashboard: Annotated[bool, typer.Option(help="Serve the live dashboard meanwhile.")] = True,
    keep_serving: Annotated[
        bool, typer.Option("--keep-serving", help="Go on serving the dashboard until Ctrl-C.")
    ] = False,
) -> None:
    """Start an embedded redis-server, a worker and simulated bots; print what was stored.

    Meanwhile the live dashboard runs on 127.0.0.1 (URL and token printed)."""
    from worker.cli.demo import run_demo

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_demo(redis_url=redis_url, db=db, seconds=seconds, bots=bots, as_json=as_json,
             port=port if dashboard else None, keep_serving=keep_serving)  # fmt: skip
