"""``tradescribe query`` and ``tradescribe report``: the read side for people and scripts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text as RichText

from contracts.query import QUERIES, QueryError, run_query
from worker.cli import output as safe_output
from worker.cli.fit import fit_columns
from worker.cli.options import ConfigOpt, DbOpt, JsonOpt

Opt = typer.Option
TENANCY = ("account", "source", "plugin_id", "mode")
NOT_FILTERS = {"name", "db", "config", "as_json", "as_csv", "redis_url", "stream", "group",
               "timeout"}  # fmt: skip
RedisOpt = Annotated[
    str | None,
    Opt("--redis-url", help="Ask the running worker over this Redis instead of reading --db."),
]
Text = Annotated[str | None, Opt(show_default=False)]
TzOpt = Annotated[
    str | None,
    Opt("--tz", envvar="TRADESCRIBE_TZ", help="IANA time zone for days and weeks (default UTC)."),
]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _database(config: Path | None, db: str | None) -> Path | str:
    """The SQLite file, or the PostgreSQL URL, the settings name."""
    from worker.settings import load_settings

    settings = load_settings(config, db=db)
    return settings.database_url or settings.db


def check_filters(name: str, filters: dict[str, Any]) -> None:
    """A bad query name or a flag the query does not take, named as a flag."""
    spec = QUERIES.get(name)
    if spec is None:
        raise QueryError(f"unknown query {name!r}; choose one of: {', '.join(QUERIES)}")
    unknown = [k for k, v in filters.items() if v is not None and k not in spec.filters]
    if unknown:
        raise QueryError(
            f"query {name!r} does not take {', '.join(map(_flag, unknown))}; "
            f"it takes: {', '.join(map(_flag, spec.filters))}"
        )


def fetch(name: str, filters: dict[str, Any], db: Path | str) -> dict[str, Any]:
    """One query's result as plain JSON, from the database file or PostgreSQL URL.

    The ``--redis-url`` door (``worker.cli.remote.fetch_remote``) returns the
    same dict: the worker's ``query`` command calls this same ``run_query``.
    """
    check_filters(name, filters)
    return run_query(db, name, filters).as_dict()


def query(
    name: Annotated[str, typer.Argument(help="One of: " + ", ".join(QUERIES))],
    db: DbOpt = None,
    config: ConfigOpt = None,
    account: Text = None,
    source: Text = None,
    plugin_id: Text = None,
    mode: Annotated[str | None, Opt(help="live, paper or backtest.")] = None,
    tz: TzOpt = None,
    since: Annotated[str | None, Opt(help="First day YYYY-MM-DD (inclusive).")] = None,
    until: Annotated[str | None, Opt(help="Last day YYYY-MM-DD (inclusive).")] = None,
    date: Annotated[str | None, Opt(help="The day, YYYY-MM-DD (default today).")] = None,
    symbol: Annotated[str | None, Opt(help="Symbol substring.")] = None,
    status: Text = None,
    side: Annotated[str | None, Opt(help="buy or sell.")] = None,
    strategy: Text = None,
    kind: Annotated[str | None, Opt(help="closed-today: trades or signals.")] = None,
    trade_id: Text = None,
    limit: Annotated[int | None, Opt(help="history: rows per page (default 100).")] = None,
    offset: Annotated[int | None, Opt(help="history: rows to skip.")] = None,
    wait_for: Annotated[str | None, Opt(help="Wait until this event id is committed.")] = None,
    wait_timeout_s: Annotated[float | None, Opt(help="How long --wait-for waits.")] = None,
    as_json: JsonOpt = False,
    as_csv: Annotated[bool, Opt("--csv", help="Print the rows as CSV.")] = False,
    redis_url: RedisOpt = None,
    stream: Annotated[str | None, Opt(help="With --redis-url: stream key.")] = None,
    group: Annotated[str | None, Opt(help="With --redis-url: consumer group.")] = None,
    timeout: Annotated[
        float, Opt(min=0.05, max=300, help="With --redis-url: seconds to wait for the worker.")
    ] = 2.0,
) -> None:
    """Ask the database a named question: state for bots, numbers for dashboards.

    Reads the database read-only (--db: the SQLite file or a postgresql:// URL; safe
    while the worker runs), or asks
    the running worker over Redis (--redis-url; exit 2: no worker, 3: no Redis).
    """
    filters = {k: v for k, v in locals().items() if k not in NOT_FILTERS and v is not None}
    if redis_url is not None and db is not None:
        raise QueryError("give --db (read the file here) or --redis-url (ask the worker), not both")
    if redis_url is not None:
        from worker.cli.remote import fetch_remote

        check_filters(name, filters)
        result = fetch_remote(name, filters, config=config, redis_url=redis_url, stream=stream,
                              group=group, timeout_s=timeout)  # fmt: skip
    else:
        result = fetch(name, filters, _database(config, db))
    if as_json:
        # floats as serve answers them: the projections' REAL without binary noise
        # (a P&L derived from prices, -187.7157000000011, is -187.7157)
        print(safe_output.json_text(safe_output.clean(result), indent=2))
    elif as_csv:
        write_csv(safe_output.clean(result), sys.stdout)
    else:
        console = Console()
        if not console.is_terminal:
            console = Console(width=max(console.width, 220))
        print_result(result, console)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str) and len(value) == 27 and value.endswith("Z") and value[10] == "T":
        return value[:10] + " " + value[11:19]  # fixed-width UTC text, to the second
    if isinstance(value, float):
        return f"{round(value, 8):,}"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def write_csv(result: dict[str, Any], out: Any) -> None:
    safe_output.write_csv(out, result["columns"], (row.values() for row in result["rows"]))


def _table(
    title: str, rows: list[dict[str, Any]], columns: list[str] | None = None, width: int = 10**4
) -> Table:
    columns = columns or (list(rows[0]) if rows else [])
    shown = [c for c in columns if any(r.get(c) not in (None, {}, [], "") for r in rows)]
    same = {c: rows[0].get(c) for c in shown if c in TENANCY and len(rows) > 1}
    same = {c: v for c, v in same.items() if all(r.get(c) == v for r in rows)}
    shown, hidden = fit_columns(rows, [c for c in shown if c not in same], width, _cell)
    notes = [f"{c}={v}" for c, v in same.items()]
    if hidden:
        notes.append(f"not shown: {', '.join(hidden)} (--json, --csv)")
    caption = "  ".join(notes)
    table = Table(
        title=title,
        title_justify="left",
        caption=safe_output.cell(caption) if caption else None,
        caption_justify="left",
    )
    for c in shown:
        numeric = any(isinstance(r.get(c), int | float) for r in rows)
        table.add_column(c, justify="right" if numeric else "left", overflow="fold")
    for r in rows:
        table.add_row(*(safe_output.cell(_cell(r.get(c))) for c in shown))
    return table


def print_result(result: dict[str, Any], console: Console) -> None:
    rows = result["rows"]
    if rows:
        title = f"{result['name']} ({len(rows)} rows)"
        console.print(_table(title, rows, result["columns"], console.width))
    else:
        console.print(f"{result['name']}: no rows")
    for section, section_rows in result["sections"].items():
        if section_rows:
            console.print(_table(section.replace("_", " "), section_rows, width=console.width))
    if result["summary"]:
        line = RichText()
        for k, v in result["summary"].items():
            line.append(f"{'  ' if line else ''}{k} ", style="bold")
            line.append(safe_output.terminal_text(_cell(v) or "-"))
        console.print(line)


def report(
    out: Annotated[Path, Opt("--out", help="HTML file to write.")] = Path("report.html"),
    db: DbOpt = None,
    config: ConfigOpt = None,
    account: Text = None,
    source: Text = None,
    plugin_id: Text = None,
    mode: Annotated[str | None, Opt(help="live, paper or backtest.")] = None,
    tz: TzOpt = None,
    since: Annotated[str | None, Opt(help="First day YYYY-MM-DD (history, calendar).")] = None,
    until: Annotated[str | None, Opt(help="Last day YYYY-MM-DD (history, calendar).")] = None,
) -> None:
    """Write one self-contained HTML dashboard (opens offline): P&L and equity curve,
    trade history, P&L calendar, daily loss."""
    from worker.report import write_report

    filters = {"account": account, "source": source, "plugin_id": plugin_id, "mode": mode,
               "tz": tz, "since": since, "until": until}  # fmt: skip
    path = write_report(_database(config, db), out, {k: v for k, v in filters.items() if v})
    Console(stderr=True).print(f"wrote {path} ({path.stat().st_size:,} bytes)")
