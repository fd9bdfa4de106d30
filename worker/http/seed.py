"""Seed 002's four dashboard routes in the shapes its plan names, and the one
answer the dashboard page loads; all of them through the scoped query layer."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker.http.reads import bots, clean, health, one_connection, run_scoped
from worker.http.tokens import Principal

TENANCY = ("account", "source", "plugin_id", "mode")


def _pick(params: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: params[k] for k in (*TENANCY, *names) if params.get(k)}


def _dates(params: dict[str, Any]) -> dict[str, Any]:
    """Seed 002 says start_date / end_date; the query layer says since / until."""
    out = {}
    for seed_name, name in (("start_date", "since"), ("end_date", "until")):
        if params.get(seed_name) or params.get(name):
            out[name] = params.get(seed_name) or params.get(name)
    return out


def trades(db: Path | str, p: Principal, params: dict[str, Any]) -> list[dict[str, Any]]:
    filters = {**_pick(params, "symbol", "limit", "offset", "tz", "side", "strategy"),
               **_dates(params)}  # fmt: skip
    rows = run_scoped(db, p, "history", filters)["rows"]
    return [
        {"id": r["trade_id"], "source": r["source"], "account": r["account"],
         "symbol": r["symbol"], "entry_time": r["opened_at"], "exit_time": r["closed_at"],
         "entry_price": r["entry_price"], "exit_price": r["exit_price"],
         "quantity": r["quantity"], "pnl": r["realized_pnl"],
         "type": (r["side"] or "").upper(), "is_profit": (r["realized_pnl"] or 0) > 0,
         "exit_type": r["exit_reason"]}
        for r in rows
    ]  # fmt: skip


def cumulative_pnl(db: Path | str, p: Principal, params: dict[str, Any]) -> dict[str, Any]:
    result = run_scoped(db, p, "pnl", _pick(params, "tz"))
    names = {"all_time": "all_time", "year": "year", "month": "month", "week": "week",
             "today": "day"}  # fmt: skip
    out: dict[str, Any] = {names[r["period"]]: r["pnl"] for r in result["rows"]}
    out["trades"] = {names[r["period"]]: r["trades"] for r in result["rows"]}
    out["tz"] = (result["summary"] or {}).get("tz")
    return out


def daily_stats(db: Path | str, p: Principal, params: dict[str, Any]) -> list[dict[str, Any]]:
    rows = run_scoped(db, p, "daily-loss", _pick(params, "tz", "date"))["rows"]
    return [
        {"broker_id": r["account"], "source": r["source"], "plugin_id": r["plugin_id"],
         "mode": r["mode"], "date": r["date"], "loss_used": r["daily_loss_used"],
         "loss_limit": r["daily_loss_limit"], "percentage": r["percent"],
         "loss_limit_hit": bool(r["loss_limit_hit"]),
         "trading_blocked": bool(r["trading_blocked"])}
        for r in rows
    ]  # fmt: skip


def pnl_calendar(db: Path | str, p: Principal, params: dict[str, Any]) -> dict[str, Any]:
    rows = run_scoped(db, p, "calendar", {**_pick(params, "tz"), **_dates(params)})["rows"]
    return {r["date"]: r["pnl"] for r in rows}


ROUTES: dict[str, Callable[[Path | str, Principal, dict[str, Any]], Any]] = {
    "trades": trades,
    "cumulative-pnl": cumulative_pnl,
    "daily-stats": daily_stats,
    "pnl-calendar": pnl_calendar,
}


def as_table(result: Any) -> dict[str, Any]:
    """A seed route's answer as a query result, for ``?format=csv``."""
    if isinstance(result, list):
        rows = result
    else:
        rows = [{"key": k, "value": v} for k, v in result.items() if not isinstance(v, dict)]
    columns = list(rows[0]) if rows else []
    return {"name": "seed", "columns": columns, "rows": rows, "summary": None, "sections": {}}


def equity(
    db: Path | str,
    p: Principal,
    tz: dict[str, Any],
    all_time: float,
    calendar: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Cumulative realised P&L: per day over the calendar's year, or per trade (the
    last 500) when fewer than two days had trades. ``calendar``: the calendar query's
    answer for ``tz`` when the caller has it already."""
    if calendar is None:
        calendar = run_scoped(db, p, "calendar", tz)
    days = calendar["rows"]
    if len(days) >= 2:
        level = all_time - sum(d["pnl"] for d in days)
        points = []
        for d in days:
            level += d["pnl"]
            points.append([d["date"], level])
        return {"by": "day", "start": all_time - sum(d["pnl"] for d in days), "points": points}
    closed = list(reversed(run_scoped(db, p, "history", {**tz, "limit": 500})["rows"]))
    start = all_time - sum(r["realized_pnl"] or 0 for r in closed)
    level, points = start, []
    for r in closed:
        level += r["realized_pnl"] or 0
        points.append([r["closed_at"], level])
    return {"by": "trade", "start": start, "points": points}


# The open trades' columns the page shows (static/dashboard.js renderOpen): all 18 with
# their attributes were 97 of the admin answer's 171 kB at 1,000,000 trades (225 open),
# sent to every page about three times a second.
OPEN_COLUMNS = ("opened_at", "source", "account", "trade_id", "symbol", "side", "quantity",
                "entry_price", "stop_loss", "unrealized_pnl")  # fmt: skip


def _columns(result: dict[str, Any], columns: tuple[str, ...]) -> dict[str, Any]:
    """A query's answer with only ``columns`` of its rows."""
    rows = [{c: r[c] for c in columns} for r in result["rows"]]
    return {**result, "columns": list(columns), "rows": rows}


def dashboard_live(db: Path | str, p: Principal) -> dict[str, Any]:
    """The parts of the dashboard that move with the clock, not with commits (the
    commit's age) or without an event (an admin's dead letters, the file's size):
    made for every request, a millisecond."""
    return {"whoami": clean(p.as_dict()), "now": dt.datetime.now(dt.UTC).isoformat(),
            "health": clean(health(db, p))}  # fmt: skip


def dashboard_data(db: Path | str, p: Principal, params: dict[str, Any]) -> dict[str, Any]:
    """The parts of the dashboard that change only with commits (and with the day):
    the costly ones, which the server shares (``worker/http/shared.py``)."""
    tz = _pick({"tz": params.get("tz")}, "tz")
    history_filters = {**_pick(params, "tz", "symbol", "side", "strategy", "since", "until",
                               "status", "offset"), "limit": params.get("limit") or 50}  # fmt: skip
    with one_connection(db):  # one connection for every part (see one_connection)
        pnl = run_scoped(db, p, "pnl", tz)
        all_time = pnl["rows"][0]["pnl"] if pnl["rows"] else 0.0
        calendar = run_scoped(db, p, "calendar", tz)  # the calendar card and the equity curve
        # run_scoped's answers are clean already; the rest is cleaned here (cleaning the
        # whole answer again walked its 140 kB a second time).
        return {
            "pnl": pnl,
            "bots": clean(bots(db, p, tz)),
            "open_trades": _columns(run_scoped(db, p, "active-trades", {}), OPEN_COLUMNS),
            "history": run_scoped(db, p, "history", history_filters),
            "calendar": calendar,
            "daily_loss": run_scoped(db, p, "daily-loss", tz),
            "equity": clean(equity(db, p, tz, all_time, calendar)),
        }
