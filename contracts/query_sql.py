"""The queries themselves: one function per name, each (connection, filters) -> result.

Every value reaches the database as a bound parameter; the only text joined into SQL
is column names and fragments written here. One SQL text per query for both engines;
what SQLite and PostgreSQL spell differently comes from the connection's dialect
(``contracts.query_db.Dialect``). Every ORDER BY names a unique key (or NULLs' place),
so both engines give the same rows in the same order.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from contracts.query_db import SQLITE, Dialect, ReadConnection
from contracts.query_model import (
    COMMON_FILTERS,
    Filters,
    QueryError,
    QueryResult,
    day_range,
    day_start,
    day_starts,
    local_today,
)
from contracts.query_stats import (
    EMPTY,
    can_use_days,
    counts_since,
    daily_local,
    daily_utc,
    distinct_trades,
    raw_where,
    resolve_symbols,
    skip_days,
    stats,
    tidy,
)
from contracts.vocabulary import ROW_TENANCY

Now = dt.datetime
# Written as in worker/store/schema.py's partial indexes, which only serve the exact text.
ACTIVE_TRADE = "status IN ('pending', 'open', 'partial')"
ACTIVE_SIGNAL = "status IN ('active', 'triggered')"
TRADE_ROW = (
    "source", "trade_id", "account", "plugin_id", "mode", "symbol", "side", "quantity",
    "entry_price", "exit_price", "realized_pnl", "fees", "exit_reason", "strategy", "status",
    "opened_at", "closed_at",
)  # fmt: skip
ACTIVE_TRADE_ROW = (
    "source", "trade_id", "account", "plugin_id", "mode", "symbol", "side", "quantity",
    "entry_price", "stop_loss", "take_profit", "current_price", "unrealized_pnl", "strategy",
    "status", "opened_at", "updated_at", "attributes",
)  # fmt: skip
SIGNAL_ROW = (
    "source", "signal_id", "account", "plugin_id", "mode", "symbol", "side", "entry_price",
    "stop_loss", "take_profit", "current_price", "exit_price", "realized_pnl", "confidence",
    "timeframe", "strategy", "exit_reason", "status", "emitted_at", "closed_at", "attributes",
)  # fmt: skip
POSITION_ROW = (
    "account", "source", "mode", "position_key", "plugin_id", "symbol", "quantity",
    "entry_price", "current_price", "unrealized_pnl", "realized_pnl", "lot_size", "exchange",
    "instrument_token", "updated_at", "attributes",
)  # fmt: skip
JOURNAL_ROW = (
    "at", "source", "account", "plugin_id", "mode", "title", "text", "trade_id", "signal_id",
    "category", "tags", "event_id",
)  # fmt: skip
UTC_NAMES = {"UTC", "Etc/UTC", "Etc/UCT", "UCT", "GMT", "Etc/GMT", "Zulu", "Etc/Zulu"}
JSON_COLUMNS = {"attributes", "tags", "body"}


class Where:
    """AND-ed conditions with their bound parameters."""

    def __init__(self, d: Dialect, alias: str = "") -> None:
        self.d = d
        self.prefix = f"{alias}." if alias else ""
        self.parts: list[str] = []
        self.params: list[Any] = []

    def add(self, condition: str, *params: Any) -> Where:
        self.parts.append(condition)
        self.params.extend(params)
        return self

    def eq(self, column: str, value: Any) -> Where:
        if value is not None:
            self.add(f"{self.prefix}{column} = ?", value)
        return self

    def among(self, column: str, values: Sequence[str]) -> Where:
        marks = ", ".join("?" * len(values))
        return self.add(f"{self.prefix}{column} IN ({marks})", *values)

    def tenancy(self, f: Filters, indexed: bool = True) -> Where:
        """The tenancy filters; ``indexed=False`` writes them as ``+column`` so that
        SQLite keeps to the query's own index (a partial or time index) rather than
        walking the primary key for a source."""
        prefix = self.prefix
        if not indexed:
            self.prefix = self.d.noindex + prefix
        for column in ROW_TENANCY:
            self.eq(column, getattr(f, column))
        for column, scope in (("account", f.scope_accounts), ("source", f.scope_sources)):
            if scope is not None:
                self.among(column, scope)
        self.prefix = prefix
        return self

    @property
    def sql(self) -> str:
        return " WHERE " + " AND ".join(self.parts) if self.parts else ""


def _rows(con: ReadConnection, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    parsed = [name for name in names if name in JSON_COLUMNS]
    if not parsed:  # the usual page: no per-row work beyond the dict
        return [dict(zip(names, record, strict=True)) for record in cur]
    out = []
    for record in cur:
        row = dict(zip(names, record, strict=True))
        for name in parsed:
            if isinstance(row[name], str):
                row[name] = json.loads(row[name])
        out.append(row)
    return out


def _select(
    con: ReadConnection,
    name: str,
    columns: Sequence[str],
    table: str,
    where: Where,
    order: str,
    page: tuple[int, int] | None = None,
) -> QueryResult:
    sql = f"SELECT {', '.join(columns)} FROM {table}{where.sql} ORDER BY {order}"
    params = list(where.params)
    if page is not None:
        sql += " LIMIT ? OFFSET ?"
        params += list(page)
    return QueryResult(name, list(columns), _rows(con, sql, params))


def summarise(record: Sequence[Any]) -> dict[str, Any]:
    """count, wins, losses, win rate, gross profit/loss, net, average, best, worst, PF."""
    count, wins, losses, gross_profit, gross_loss, best, worst = record
    net = gross_profit + gross_loss
    return {
        "count": count,
        "wins": wins,
        "losses": losses,
        "win_rate": round(100.0 * wins / count, 2) if count else None,
        "gross_profit": round(gross_profit, 2),
        "gross_loss": round(gross_loss, 2),
        "net": round(net, 2),
        "average": round(net / count, 2) if count else None,
        "best": round(best, 2) if best is not None else None,
        "worst": round(worst, 2) if worst is not None else None,
        "profit_factor": round(gross_profit / -gross_loss, 3) if gross_loss else None,
    }


# --- what a bot needs on restart ----------------------------------------------


def active_trades(con: ReadConnection, f: Filters, now: Now) -> QueryResult:
    where = Where(con.d).add(ACTIVE_TRADE).tenancy(f, indexed=False)
    if f.symbol:
        where.add(con.d.contains("symbol"), f.symbol)
    order = f"{con.d.nulls_first('opened_at')}, trade_id, source"
    return _select(con, "active-trades", ACTIVE_TRADE_ROW, "trades", where, order)


def active_signals(con: ReadConnection, f: Filters, now: Now) -> QueryResult:
    where = Where(con.d).add(ACTIVE_SIGNAL).tenancy(f, indexed=False)
    if f.symbol:
        where.add(con.d.contains("symbol"), f.symbol)
    order = f"{con.d.nulls_first('emitted_at')}, signal_id, source"
    return _select(con, "active-signals", SIGNAL_ROW, "signals", where, order)


def positions(con: ReadConnection, f: Filters, now: Now) -> QueryResult:
    where = Where(con.d).add("is_active = 1").tenancy(f)
    if f.symbol:
        where.add(con.d.contains("symbol"), f.symbol)
    order = f"account, source, {con.d.nulls_first('symbol')}, mode, position_key"
    return _select(con, "positions", POSITION_ROW, "positions", where, order)


def closed_today(con: ReadConnection, f: Filters, now: Now) -> QueryResult:
    today = local_today(f.zone, now)
    lo, hi = day_range(today, today, f.zone)
    where = Where(con.d).add("closed_at >= ? AND closed_at < ?", lo, hi)
    where.tenancy(f, indexed=False)
    if f.kind == "signals":
        order = "closed_at, signal_id, source"
        result = _select(con, "closed-today", SIGNAL_ROW, "signals", where, order)
    else:
        order = "closed_at, trade_id, source"
        result = _select(con, "closed-today", TRADE_ROW, "trades", where, order)
    pnl = [r["realized_pnl"] for r in result.rows if r["realized_pnl"] is not None]
    result.summary = {"date": today.isoformat(), "tz": f.tz, "kind": f.kind,
                      "count": len(result.rows), "net": round(sum(pnl), 2)}  # fmt: skip
    return result


# --- history and its summary --------------------------------------------------


def _local_range(f: Filters) -> tuple[str | None, str | None]:
    """The filters' since/until (local days, inclusive) as a UTC text range."""
    lo = day_start(f.since, f.zone) if f.since else None
    hi = day_start(f.until + dt.timedelta(days=1), f.zone) if f.until else None
    return lo, hi


HISTORY_ORDER = "closed_at DESC, trade_id DESC"
# A symbol filter with fewer matches than this (and than DENSE_SYMBOL times the rows
# a page walks past) is paged by sorting its matches out of trades_symbol_cover;
# a denser one by walking trades_closed newest first and passing over the others.
SPARSE_SYMBOL = 50_000
DENSE_SYMBOL = 20
# From this offset on, the whole UTC days it passes over are counted in trade_days.
SKIP_FROM = 10_000


def history(con: ReadConnection, f: Filters, now: Now) -> QueryResult:
    lo, hi = _local_range(f)
    symbols = resolve_symbols(con, f)
    record = stats(con, f, lo, hi, symbols=symbols).get(None, EMPTY)
    columns = ", ".join(TRADE_ROW)
    matches, walked = record[0], f.offset + f.limit
    if con.d is SQLITE and f.symbol and matches < min(SPARSE_SYMBOL, DENSE_SYMBOL * walked):
        # few matches: sort them (their keys and rowids, from the symbol index), then
        # read only the page's rows (PostgreSQL's planner chooses this itself)
        where_sql, params = raw_where(con.d, f, lo, hi, symbols)
        sql = (f"SELECT {columns} FROM trades WHERE rowid IN (SELECT rowid FROM trades"
               f"{where_sql} ORDER BY {HISTORY_ORDER} LIMIT ? OFFSET ?) "
               f"ORDER BY {HISTORY_ORDER}")  # fmt: skip
        rows = _rows(con, sql, [*params, f.limit, f.offset])
    else:
        # trades_closed is in the page's order and holds its columns: the offset's
        # entries are passed over in the index, nothing is sorted
        offset = f.offset
        if offset >= SKIP_FROM:
            hi, offset = skip_days(con, f, lo, hi, offset)
        where_sql, params = raw_where(con.d, f, lo, hi, symbols, "+")
        sql = f"SELECT {columns} FROM trades{where_sql} ORDER BY {HISTORY_ORDER} LIMIT ? OFFSET ?"
        rows = _rows(con, sql, [*params, f.limit, offset])
    summary = {**summarise(record), "limit": f.limit, "offset": f.offset}
    return QueryResult("history", list(TRADE_ROW), rows, summary)


def _grouped(con: ReadConnection, f: Filters, name: str, column: str) -> QueryResult:
    by_key = stats(con, f, *_local_range(f), group=column)
    rows = [{column: key, **summarise(record)} for key, record in by_key.items()]
    rows.sort(key=lambda r: (-r["net"], r[column]))
    columns = [column, "count", "wins", "losses", "win_rate", "net", "average", "best", "worst",
               "gross_profit", "gross_loss", "profit_factor"]  # fmt: skip
    return QueryResult(name, columns, [{c: r[c] for c in columns} for r in rows])


def plugins(con: ReadConnection, f: Filters, now: Now) -> QueryResult:
    """Per-plugin statistics, as seed 004's get_all_plugin_statistics."""
    return _grouped(con, f, "plugins", "plugin_id")


def strategies(con: ReadConnection, f: Filters, now: Now) -> QueryResult:
    return _grouped(con, f, "strategies", "strategy")


# --- P&L over time --------------------------------------------------------------


def pnl(con: ReadConnection, f: Filters, now: Now) -> QueryResult:
    """Realised P&L for all time, this year, month, week (from Monday) and today."""
    today = local_today(f.zone, now)
    starts = {
        "all_time": None,
        "year": today.replace(month=1, day=1),
        "month": today.replace(day=1),
        "week": today - dt.timedelta(days=today.weekday()),
        "today": today,
    }
    los = [day_start(start, f.zone) if start else None for start in starts.values()]
    rows = []
    for (period, start), (trades, net) in zip(
        starts.items(), counts_since(con, f, los), strict=True
    ):
        rows.append({"period": period, "since": start.isoformat() if start else None,
                     "trades": trades, "pnl": round(net, 2)})  # fmt: skip
    return QueryResult("pnl", ["period", "since", "trades", "pnl"], rows,
                       {"tz": f.tz, "today": today.isoformat()})  # fmt: skip


def _is_utc(f: Filters, first: dt.date, last: dt.date) -> bool:
    moments = (dt.datetime.combine(d, dt.time(), tzinfo=f.zone) for d in (first, last))
    return all(m.utcoffset() == dt.timedelta(0) for m in moments) and f.tz in UTC_NAMES


def calendar(con: ReadConnection, f: Filters, now: Now) -> QueryResult:
    """Daily realised P&L between two local days (default: the last 365)."""
    until = f.until or local_today(f.zone, now)
    since = f.since or until - dt.timedelta(days=364)
    if since > until or (until - since).days > 3700:
        raise QueryError("calendar needs since <= until, at most about ten years apart")
    records: Sequence[Sequence[Any]]
    if _is_utc(f, since, until) and can_use_days(con, f):
        records = daily_utc(con, f, since.isoformat(), until.isoformat())
    elif can_use_days(con, f):
        count = (until - since).days + 1
        bounds = day_starts(since, count + 1, f.zone)
        first = since.toordinal()
        records = [(dt.date.fromordinal(first + i).isoformat(), *v)
                   for i, *v in daily_local(con, f, bounds) if v[0]]  # fmt: skip
    else:
        records = _daily_local(con, f, since, until)
    keys = ("date", "trades", "pnl", "wins", "losses")
    rows = [dict(zip(keys, r, strict=True)) for r in records if r[1]]
    for row in rows:
        row["pnl"] = round(row["pnl"], 2) + 0.0  # + 0.0: never -0.0
    summary = {"since": since.isoformat(), "until": until.isoformat(), "tz": f.tz,
               "days_traded": len(rows), "net": round(sum(r["pnl"] for r in rows), 2)}  # fmt: skip
    return QueryResult("calendar", list(keys), rows, summary)


def _daily_local(
    con: ReadConnection, f: Filters, since: dt.date, until: dt.date
) -> list[tuple[Any, ...]]:
    """Per local day, straight from trades: each day is its own UTC range."""
    days = []
    day = since
    while day <= until:
        days.append((day.isoformat(), *day_range(day, day, f.zone)))
        day += dt.timedelta(days=1)
    d = con.d
    where = Where(d, "t").eq("status", "closed").tenancy(f, indexed=False)
    where.eq("strategy", f.strategy)
    days_sql, _ = d.json_rows("j")
    sql = f"""WITH days(day, lo, hi) AS (
        SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2 FROM {days_sql})
        SELECT d.day, count(*), {d.total("t.realized_pnl")}, {d.count_if("t.realized_pnl > 0")},
               {d.count_if("t.realized_pnl < 0")}
        FROM days d JOIN trades t ON t.closed_at >= d.lo AND t.closed_at < d.hi
        {where.sql} GROUP BY d.day ORDER BY d.day"""
    found = con.execute(sql, [json.dumps(days), *where.params]).fetchall()
    return [(r[0], r[1], tidy(r[2]), r[3], r[4]) for r in found]


def daily_loss(con: ReadConnection, f: Filters, now: Now) -> QueryResult:
    """Daily loss used against the limit, from daily_stats (seed 002's card)."""
    day = f.date or local_today(f.zone, now)
    where = Where(con.d).eq("date", day.isoformat()).tenancy(f)
    columns = [*ROW_TENANCY, "date", "daily_loss_used", "daily_loss_limit", "loss_limit_hit",
               "trading_blocked", "total_realized_pnl"]  # fmt: skip
    order = "account, source, plugin_id, mode"
    result = _select(con, "daily-loss", columns, "daily_stats", where, order)
    used = sum(r["daily_loss_used"] or 0.0 for r in result.rows)
    limits = [r["daily_loss_limit"] for r in result.rows if r["daily_loss_limit"] is not None]
    for r in result.rows:
        lim = r["daily_loss_limit"]
        r["percent"] = round(100 * (r["daily_loss_used"] or 0) / lim, 1) if lim else None
    result.columns.append("percent")
    limit = sum(limits) if limits else None
    result.summary = {
        "date": day.isoformat(),
        "used": round(used, 2),
        "limit": limit,
        "percent": round(100 * used / limit, 1) if limit else None,
        "blocked": any(r["trading_blocked"] or r["loss_limit_hit"] for r in result.rows),
    }
    return result


# --- one trade, the journal -----------------------------------------------------


def trade(con: ReadConnection, f: Filters, now: Now) -> QueryResult:
    """One trade with its status history and every event about it."""
    if not f.trade_id:
        raise QueryError("the trade query needs trade_id (--trade-id on the command line)")
    where = Where(con.d).eq("trade_id", f.trade_id).tenancy(f)
    if f.source is None:
        # The key is (source, trade_id): with the few distinct sources (SQLite skips
        # from one to the next in the key's index) it is a handful of key lookups,
        # where trade_id alone would scan every trade.
        sources = distinct_trades(con, "source")
        if sources is not None:
            where.among("source", sources)
    result = _select(con, "trade", TRADE_ROW, "trades", where, "source")
    history_rows: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for row in result.rows:
        key = (row["source"], row["trade_id"])
        history_rows += _rows(
            con,
            """SELECT ts, status, event_type, event_id, source
            FROM trade_status_history WHERE source = ? AND trade_id = ?
            ORDER BY ts, event_id""",
            key,
        )
        events += _rows(
            con,
            """SELECT ts, type, event_id, source, committed_at, body
            FROM events WHERE source = ? AND subject = ?
            AND (type LIKE 'trade.%' OR type = 'journal.entry') ORDER BY ts, event_id""",
            key,
        )
    result.sections = {"status_history": history_rows, "events": events}
    return result


def journal(con: ReadConnection, f: Filters, now: Now) -> QueryResult:
    day = f.date or local_today(f.zone, now)
    lo, hi = day_range(day, day, f.zone)
    where = Where(con.d).add("at >= ? AND at < ?", lo, hi).tenancy(f)
    result = _select(con, "journal", JOURNAL_ROW, "journal_entries", where, "at, event_id")
    result.summary = {"date": day.isoformat(), "tz": f.tz, "count": len(result.rows)}
    return result


# --- the registry ----------------------------------------------------------------

QueryFn = Callable[[ReadConnection, Filters, Now], QueryResult]


@dataclass(frozen=True)
class QuerySpec:
    name: str
    run: QueryFn
    filters: tuple[str, ...]
    help: str


_HISTORY = ("tz", "since", "until", "symbol", "status", "side", "strategy")
_SPECS = [
    QuerySpec("active-trades", active_trades, ("symbol",), "Open trades (restore on restart)."),
    QuerySpec("active-signals", active_signals, ("symbol",), "Active signals."),
    QuerySpec("positions", positions, ("symbol",), "Open positions."),
    QuerySpec("closed-today", closed_today, ("tz", "kind"), "Trades or signals closed today."),
    QuerySpec("history", history, (*_HISTORY, "limit", "offset"), "Closed trades + summary."),
    QuerySpec("pnl", pnl, ("tz",), "Realised P&L: all time, year, month, week, today."),
    QuerySpec("calendar", calendar, ("tz", "since", "until"), "Daily P&L between two days."),
    QuerySpec("daily-loss", daily_loss, ("tz", "date"), "Daily loss used vs limit."),
    QuerySpec("plugins", plugins, _HISTORY, "Per-plugin statistics (seed 004)."),
    QuerySpec("strategies", strategies, _HISTORY, "Per-strategy statistics."),
    QuerySpec("trade", trade, ("trade_id",), "One trade, its status history and events."),
    QuerySpec("journal", journal, ("tz", "date"), "Journal entries of one day."),
]
QUERIES: dict[str, QuerySpec] = {
    s.name: QuerySpec(s.name, s.run, (*COMMON_FILTERS, *s.filters), s.help) for s in _SPECS
}
