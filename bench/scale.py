"""Prefilling a database with history, fast, so that drains can be timed against it.

Rows go straight in with ``executemany`` (``synchronous=OFF``, large
transactions: this is set-up, not measured): events with time-ordered ids from
a past day and a realistic body, and one closed trade per five events.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.ceiling import create_schema
from bench.workload import SOURCES
from worker.store import aggregates
from worker.store.projections import TRADES
from worker.store.sql import EVENT_COLUMNS, insert_sql

_BASE_MS = 1_704_067_200_000  # 2024-01-01: history, older than anything the drain sends
_CHUNK = 50_000
_BODY = (
    '{"id":"%s","type":"trade.closed","source":"%s","ts":"2024-01-01T00:00:00+00:00",'
    '"account":"ACC-1","plugin_id":"trend-v1","mode":"paper","data":{"trade_id":"%s",'
    '"exit_price":"43012.1234","realized_pnl":"12.1234","fees":"0.25","exit_reason":"target"}}'
)
_TS = "2024-01-01T00:00:00.000000Z"
_TRADE_VALUES = {
    "account": "ACC-1",
    "plugin_id": "trend-v1",
    "mode": "paper",
    "symbol": "BTCUSDT",
    "side": "buy",
    "quantity": 1.0,
    "entry_price": 43000.0,
    "exit_price": 43012.1234,
    "realized_pnl": 12.1234,
    "fees": 0.25,
    "exit_reason": "target",
    "strategy": "trend",
    "status": "closed",
    "opened_at": _TS,
    "closed_at": _TS,
    "created_at": _TS,
    "updated_at": _TS,
    "attributes": "{}",
    "versions": "{}",
}


def _event_id(n: int) -> str:
    ms = f"{_BASE_MS + n // 1000:012x}"
    return f"{ms[:8]}-{ms[8:]}-7{n % 4096:03x}-8000-{n:012x}"


def _events(start: int, stop: int) -> Iterator[tuple[Any, ...]]:
    for n in range(start, stop):
        event_id = _event_id(n)
        source = f"old-bot-{n % SOURCES}"
        trade_id = f"H{n // 5}"
        yield (
            event_id, "trade.closed", source, "ACC-1", "trend-v1", "paper", trade_id, _TS,
            f"{_BASE_MS + n}-0", _TS, _BODY % (event_id, source, trade_id),
        )  # fmt: skip


def _trades(start: int, stop: int) -> Iterator[tuple[Any, ...]]:
    for n in range(start, stop):
        if n % 5 == 0:
            values = {"source": f"old-bot-{n % SOURCES}", "trade_id": f"H{n // 5}"}
            yield tuple(values.get(c, _TRADE_VALUES.get(c)) for c in TRADES.all_columns)


def stored_events(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(db)
    try:
        return int(con.execute("SELECT count(*) FROM events").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def prefill(db: Path, total: int) -> int:
    """Add history rows until ``db`` holds ``total`` events; returns how many were added."""
    fresh = not db.exists()
    con = sqlite3.connect(db, isolation_level=None)
    try:
        if fresh:
            create_schema(con)
        have = int(con.execute("SELECT count(*) FROM events").fetchone()[0])
        done = int(
            con.execute("SELECT count(*) FROM events WHERE event_id < '0190'").fetchone()[0]
        )  # history rows already there (ids from 2024 sort before the drain's)
        con.execute("PRAGMA synchronous = OFF")
        events_sql = insert_sql("events", EVENT_COLUMNS, "INSERT")
        trades_sql = insert_sql("trades", TRADES.all_columns, "INSERT")
        added = max(0, total - have)
        for start in range(done, done + added, _CHUNK):
            stop = min(start + _CHUNK, done + added)
            con.execute("BEGIN")
            con.executemany(events_sql, _events(start, stop))
            con.executemany(trades_sql, _trades(start, stop))
            con.execute("COMMIT")
        if added:  # the worker keeps the aggregates; rows put in directly are summed here
            con.execute("BEGIN")
            for sql in aggregates.RESUM:
                con.execute(sql)
            con.execute("COMMIT")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return added
    finally:
        con.close()
