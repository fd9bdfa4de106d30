"""Sums over closed trades, fast at any size.

A UTC time range ``[lo, hi)`` is split into whole UTC days, read from the
``trade_days`` table the worker keeps (schema 3), and the ragged edges (less
than a day each, e.g. when a local day starts at 23:00 UTC), read from
``trades``. Filters ``trade_days`` cannot answer (symbol, side, another status)
fall back to ``trades`` alone, as do databases older than schema 3.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Sequence
from typing import Any

from contracts.query_model import Filters

TENANCY = ("account", "source", "plugin_id", "mode")
RAW_SUMMARY = """count(*), sum(realized_pnl > 0), sum(realized_pnl < 0),
    total(CASE WHEN realized_pnl > 0 THEN realized_pnl END),
    total(CASE WHEN realized_pnl < 0 THEN realized_pnl END), max(realized_pnl), min(realized_pnl)"""
DAY_SUMMARY = """sum(trades), sum(wins), sum(losses), total(gross_profit), total(gross_loss),
    max(best), min(worst)"""
EMPTY: tuple[Any, ...] = (0, 0, 0, 0.0, 0.0, None, None)
MIDNIGHT = "T00:00:00.000000Z"


def has_trade_days(con: sqlite3.Connection) -> bool:
    found = con.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'trade_days'"
    ).fetchone()
    return found is not None


def can_use_days(con: sqlite3.Connection, f: Filters) -> bool:
    return not f.symbol and not f.side and f.status in (None, "closed") and has_trade_days(con)


def merge(a: Sequence[Any], b: Sequence[Any]) -> tuple[Any, ...]:
    """Two (count, wins, losses, gross profit, gross loss, best, worst) summed."""
    best = [x for x in (a[5], b[5]) if x is not None]
    worst = [x for x in (a[6], b[6]) if x is not None]
    return (
        (a[0] or 0) + (b[0] or 0),
        (a[1] or 0) + (b[1] or 0),
        (a[2] or 0) + (b[2] or 0),
        (a[3] or 0.0) + (b[3] or 0.0),
        (a[4] or 0.0) + (b[4] or 0.0),
        max(best) if best else None,
        min(worst) if worst else None,
    )


def _next_day(day: str) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()


def split(lo: str | None, hi: str | None) -> tuple[str | None, str | None, list[tuple[str, str]]]:
    """Whole UTC days [first_day, end_day) inside [lo, hi), and the edges outside them."""
    first = None if lo is None else lo[:10] if lo[10:] == MIDNIGHT else _next_day(lo[:10])
    end = None if hi is None else hi[:10]
    if first is not None and end is not None and first >= end:
        return None, None, [(lo or "", hi or "")]  # no whole day inside: all from trades
    edges = []
    if lo is not None and first is not None and lo < first + MIDNIGHT:
        edges.append((lo, first + MIDNIGHT))
    if hi is not None and end is not None and end + MIDNIGHT < hi:
        edges.append((end + MIDNIGHT, hi))
    return first, end, edges


def _filters(f: Filters, prefix: str = "") -> tuple[list[str], list[Any]]:
    parts: list[str] = []
    params: list[Any] = []
    for column in TENANCY:
        value = getattr(f, column)
        if value is not None:
            parts.append(f"{prefix}{column} = ?")
            params.append(value)
    if f.strategy is not None:
        parts.append(f"{prefix}strategy = ?")
        params.append(f.strategy)
    return parts, params


def raw_where(f: Filters, lo: str | None, hi: str | None) -> tuple[str, list[Any]]:
    """WHERE over ``trades`` for closed trades in [lo, hi) matching every filter."""
    parts: list[str] = ["status = ?"]
    params: list[Any] = [f.status or "closed"]
    parts.append("closed_at >= ?" if lo is not None else "closed_at IS NOT NULL")
    params += [lo] if lo is not None else []
    if hi is not None:
        parts.append("closed_at < ?")
        params.append(hi)
    more, more_params = _filters(f)
    parts += more
    params += more_params
    if f.side:
        parts.append("side = ?")
        params.append(f.side)
    if f.symbol:
        parts.append("instr(lower(symbol), lower(?)) > 0")
        params.append(f.symbol)
    return " WHERE " + " AND ".join(parts), params


def stats(
    con: sqlite3.Connection, f: Filters, lo: str | None, hi: str | None, group: str | None = None
) -> dict[Any, tuple[Any, ...]]:
    """Summary tuples of closed trades in [lo, hi), per ``group`` column value (or None)."""
    # No GROUP BY without a group (SQLite would sort for nothing); trade_days is grouped
    # by the plain column, which its indexes hold in order.
    raw_key, days_key = (f"coalesce({group}, '')", group) if group else ("NULL", "NULL")
    raw_by = " GROUP BY 1" if group else ""
    days_by = f" GROUP BY {group}" if group else ""
    out: dict[Any, tuple[Any, ...]] = {}

    def add(sql: str, params: list[Any]) -> None:
        for record in con.execute(sql, params):
            key = (record[0] or "(none)") if group else None
            out[key] = merge(out.get(key, EMPTY), record[1:])

    if not can_use_days(con, f):
        where, params = raw_where(f, lo, hi)
        add(f"SELECT {raw_key}, {RAW_SUMMARY} FROM trades{where}{raw_by}", params)
        return out
    first, end, edges = split(lo, hi)
    if first is not None or end is not None or not edges:
        parts, params = _filters(f)
        if first is not None:
            parts.append("day >= ?")
            params.append(first)
        if end is not None:
            parts.append("day < ?")
            params.append(end)
        where = " WHERE " + " AND ".join(parts) if parts else ""
        add(f"SELECT {days_key}, {DAY_SUMMARY} FROM trade_days{where}{days_by}", params)
    for edge_lo, edge_hi in edges:
        where, params = raw_where(f, edge_lo, edge_hi)
        add(f"SELECT {raw_key}, {RAW_SUMMARY} FROM trades{where}{raw_by}", params)
    return out


def daily_utc(con: sqlite3.Connection, f: Filters, first: str, last: str) -> list[tuple[Any, ...]]:
    """(day, trades, pnl, wins, losses) per UTC day from ``trade_days``."""
    parts, params = _filters(f)
    parts += ["day >= ?", "day <= ?"]
    params += [first, last]
    sql = f"""SELECT day, sum(trades), total(gross_profit) + total(gross_loss), sum(wins),
        sum(losses) FROM trade_days WHERE {" AND ".join(parts)} GROUP BY day ORDER BY day"""
    return con.execute(sql, params).fetchall()


def counts_since(
    con: sqlite3.Connection, f: Filters, starts: Sequence[str | None]
) -> list[tuple[int, float]]:
    """(closed trades, net P&L) from each start (UTC text, None: all time), in one pass."""
    if not can_use_days(con, f):
        cols, params = [], []
        for lo in starts:
            cols += ["sum(closed_at >= ?)", "total(CASE WHEN closed_at >= ? THEN realized_pnl END)"]
            params += [lo or "", lo or ""]
        where, where_params = raw_where(f, None, None)
        record = con.execute(f"SELECT {', '.join(cols)} FROM trades{where}",
                             [*params, *where_params]).fetchone()  # fmt: skip
        return [(record[2 * i] or 0, record[2 * i + 1]) for i in range(len(starts))]
    cols, params, edges = [], [], []
    for lo in starts:
        first, _, edge = split(lo, None)
        cols += ["sum(CASE WHEN day >= ? THEN trades END)",
                 "total(CASE WHEN day >= ? THEN gross_profit + gross_loss END)"]  # fmt: skip
        params += [first or "", first or ""]
        edges.append(edge)
    parts, where_params = _filters(f)
    where = " WHERE " + " AND ".join(parts) if parts else ""
    record = con.execute(f"SELECT {', '.join(cols)} FROM trade_days{where}",
                         [*params, *where_params]).fetchone()  # fmt: skip
    out = []
    for i, edge in enumerate(edges):
        n, net = record[2 * i] or 0, record[2 * i + 1]
        for edge_lo, edge_hi in edge:
            sql, edge_params = raw_where(f, edge_lo, edge_hi)
            more = con.execute(f"SELECT count(*), total(realized_pnl) FROM trades{sql}",
                               edge_params).fetchone()  # fmt: skip
            n, net = n + more[0], net + more[1]
        out.append((n, net))
    return out
