"""The ``tradescribe`` command: every command group registered here, explicitly, and
``main``, which turns an error a person can act on into one line and an exit code."""

from __future__ import annotations

import sys

import typer

from bench import bench
from worker.cli.db import backup, db_app, restore_command
from worker.cli.dlq import dlq_app
from worker.cli.imports import import_command
from worker.cli.ops import check, config, ping, status
from worker.cli.query import query, report
from worker.cli.run import demo, worker
from worker.errors import one_line
from worker.http.cli import serve, token_app

app = typer.Typer(
    name="tradescribe",
    help="One scribe for all your trading bots: events on Redis Streams, one writer, one SQLite.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(worker)
app.command()(demo)
app.command()(status)
app.command()(ping)
app.command()(check)
app.command()(config)
app.command("import")(import_command)
app.add_typer(db_app, name="db")
app.command("backup")(backup)
app.command("restore")(restore_command)
app.command()(query)
app.command()(report)
app.add_typer(dlq_app, name="dlq")
app.command()(bench)
app.command()(serve)
app.add_typer(token_app, name="token")


def main() -> None:
    """Run the CLI; errors a person can act on end as one line and a documented exit code
    (``worker.errors.one_line``), anything else as a traceback (a bug)."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except BaseException as exc:
        found = one_line(exc)
        if found is None:
            raise
        message, code = found
        typer.secho(f"error: {message}", fg="red", err=True)
        sys.exit(code)


if __name__ == "__main__":
    main()
