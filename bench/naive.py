"""The naive loop: what a user could write in an afternoon, to measure the drain against.

One process, sequential: XREADGROUP of 2,000 entries, ``parse_event`` on each, the
event-log insert and a flat ``trades`` upsert (the trade events' set fields, last
write wins) with ``executemany``, one commit, XACK; WAL and ``synchronous=FULL``.
No per-field versions, no projections beyond trades, no dead letters, no id conflicts:
a fraction of the worker's work. ``drain_vs_naive`` is the worker's drain over this,
on the same events in the same run.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from contracts.events import WIRE_FIELD, parse_event
from worker.store.projections import utc_text

COUNT = 2000
_TRADE_COLUMNS = (
    "symbol",
    "side",
    "quantity",
    "entry_price",
    "stop_loss",
    "take_profit",
    "exit_price",
    "current_price",
    "realized_pnl",
    "unrealized_pnl",
    "fees",
    "exit_reason",
    "strategy",
    "status",
)
_SCHEMA = (
    "CREATE TABLE events (id TEXT PRIMARY KEY, type TEXT NOT NULL, source TEXT NOT NULL,"
    " ts TEXT NOT NULL, stream_id TEXT NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE trades (source TEXT NOT NULL, trade_id TEXT NOT NULL, account TEXT, "
    + ", ".join(_TRADE_COLUMNS)
    + ", updated_at TEXT, PRIMARY KEY (source, trade_id))",
)
_INSERT_EVENT = "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?)"
_UPSERT_TRADE = (
    f"INSERT INTO trades (source, trade_id, account, {', '.join(_TRADE_COLUMNS)}, updated_at)"
    f" VALUES ({', '.join('?' * (len(_TRADE_COLUMNS) + 4))})"
    " ON CONFLICT (source, trade_id) DO UPDATE SET account = excluded.account, "
    + ", ".join(f"{c} = coalesce(excluded.{c}, {c})" for c in _TRADE_COLUMNS)
    + ", updated_at = excluded.updated_at"
)


@dataclass
class NaiveResult:
    events: int
    seconds: float
    events_per_s: float
    stored: int


def _trade_row(event: Any, ts: str) -> tuple[Any, ...]:
    data = event.data
    values = []
    for name in _TRADE_COLUMNS:
        value = getattr(data, name, None)
        values.append(str(value) if value is not None else None)
    if event.type == "trade.closed":
        values[-1] = "closed"
    return (event.source, data.trade_id, event.account, *values, ts)


def run_naive(client: redis.Redis, stream: str, group: str, db: Path, total: int) -> NaiveResult:
    """Drain ``total`` entries of ``stream`` (the group made at id 0) as the naive loop
    does; timed from the first XREADGROUP to the last XACK."""
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA synchronous = FULL")
    for statement in _SCHEMA:
        con.execute(statement)
    done = 0
    started = time.perf_counter()
    try:
        while done < total:
            reply: Any = client.xreadgroup(group, "naive", {stream: ">"}, count=COUNT, block=1000)
            if not reply:
                continue
            entries: list[tuple[str, dict[str, str]]] = reply[0][1]
            events, trades = [], []
            for stream_id, fields in entries:
                body = fields[WIRE_FIELD]
                event = parse_event(body)
                ts = utc_text(event.ts)
                events.append((event.id, event.type, event.source, ts, stream_id, body))
                if event.type.startswith("trade."):
                    trades.append(_trade_row(event, ts))
            con.execute("BEGIN")
            con.executemany(_INSERT_EVENT, events)
            con.executemany(_UPSERT_TRADE, trades)
            con.execute("COMMIT")
            client.xack(stream, group, *[stream_id for stream_id, _ in entries])
            done += len(entries)
        seconds = max(time.perf_counter() - started, 1e-9)
        stored = int(con.execute("SELECT count(*) FROM events").fetchone()[0])
    finally:
        con.close()
    return NaiveResult(total, seconds, total / seconds, stored)
