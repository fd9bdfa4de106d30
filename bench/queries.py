"""How fast the read side answers with 1,000,000 closed trades.

    .venv/bin/python bench/queries.py [--db /tmp/bench-queries.db] [--trades 1000000] [--runs 5]

Builds the database once (schema from worker.schema, rows inserted directly into
the projection tables with executemany: this measures reads, not the worker),
then runs every query of ``contracts.query.QUERIES`` a few times through
``run_query`` (read-only connection, exactly what bots and the CLI use) and
prints the median time of each and whether it is under the 100 ms target.
An existing file with enough trades is reused; --rebuild forces a new one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sqlite3
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from contracts.query import QUERIES, run_query
from worker.projections import TRADES, utc_text
from worker.schema import MIGRATIONS

TARGET_MS = 100.0
SOURCES = [f"bot-{i}" for i in range(1, 11)]
PLUGINS = ["v3-logic-01-5min", "v3-logic-02-15min", "v3-logic-03-1h", "legacy", "grid", "scalp"]
STRATEGIES = ["breakout", "mean-revert", "trend"]
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XAUUSD", "EURUSD", "GBPUSD", "NIFTY", "BANKNIFTY"]
NOW = dt.datetime.now(dt.UTC)


def trade_row(rng: random.Random, n: int, closed: bool) -> tuple[Any, ...]:
    close = NOW - dt.timedelta(seconds=rng.randrange(3 * 365 * 86400))
    opened = close - dt.timedelta(seconds=rng.randrange(60, 86400))
    entry = round(rng.uniform(1, 50000), 2)
    pnl = round(rng.gauss(5, 100), 2)
    values = {
        "source": SOURCES[n % len(SOURCES)], "trade_id": f"T{n}",
        "account": f"ACC-{n % 2 + 1}", "plugin_id": PLUGINS[n % len(PLUGINS)],
        "mode": "live" if n % 3 else "paper", "symbol": rng.choice(SYMBOLS),
        "side": rng.choice(("buy", "sell")), "quantity": float(rng.randint(1, 10)),
        "entry_price": entry, "exit_price": entry + 1 if closed else None,
        "realized_pnl": pnl if closed else None, "strategy": rng.choice(STRATEGIES),
        "status": "closed" if closed else "open", "opened_at": utc_text(opened),
        "closed_at": utc_text(close) if closed else None,
        "created_at": utc_text(opened), "updated_at": utc_text(close),
        "attributes": "{}", "versions": "{}",
    }  # fmt: skip
    return tuple(values.get(c) for c in TRADES.all_columns)


def migrate(con: sqlite3.Connection, upto: int) -> None:
    have = con.execute("PRAGMA user_version").fetchone()[0]
    for version in range(have + 1, upto + 1):
        for statement in MIGRATIONS[version - 1]:
            con.execute(statement)
        con.execute(f"PRAGMA user_version = {version}")


def build(db: Path, trades: int) -> None:
    for suffix in ("", "-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA synchronous = OFF")
    migrate(con, upto=2)  # the tables and indexes; trade_days (3) is back-filled below
    rng = random.Random(4)
    insert = (f"INSERT INTO trades ({', '.join(TRADES.all_columns)}) "
              f"VALUES ({', '.join('?' * len(TRADES.all_columns))})")  # fmt: skip
    started = time.monotonic()
    chunk = 50_000
    for start in range(0, trades, chunk):
        con.execute("BEGIN")
        con.executemany(insert, (trade_row(rng, n, True) for n in range(start, start + chunk)))
        con.execute("COMMIT")
        print(f"  {start + chunk:>9,} trades  {time.monotonic() - started:6.1f}s", end="\r")
    con.execute("BEGIN")
    con.executemany(insert, (trade_row(rng, trades + n, False) for n in range(200)))
    _side_tables(con, rng)
    con.execute("COMMIT")
    migrate(con, upto=len(MIGRATIONS))  # as an existing database is upgraded
    con.execute("ANALYZE")
    con.close()
    print(f"\nbuilt {db} with {trades:,} closed trades in {time.monotonic() - started:.1f}s")


def _side_tables(con: sqlite3.Connection, rng: random.Random) -> None:
    """Signals, daily stats, journal, events and status history for the other queries."""
    now = utc_text(NOW)
    today = NOW.date()
    for day in range(3 * 365):
        date = (today - dt.timedelta(days=day)).isoformat()
        con.executemany(
            """INSERT INTO daily_stats (account, source, plugin_id, mode, date, daily_loss_used,
               daily_loss_limit, created_at, updated_at) VALUES (?, ?, 'legacy', 'live', ?, ?,
               5000, ?, ?)""",
            [(f"ACC-{i % 2 + 1}", s, date, rng.uniform(0, 5000), now, now)
             for i, s in enumerate(SOURCES)],
        )  # fmt: skip
    con.executemany(
        """INSERT INTO signals (source, signal_id, account, plugin_id, mode, symbol, side, status,
           emitted_at, created_at, updated_at) VALUES (?, ?, 'ACC-1', 'legacy', 'live', ?, 'buy',
           'active', ?, ?, ?)""",
        [(SOURCES[n % 10], f"S{n}", rng.choice(SYMBOLS), now, now, now) for n in range(500)],
    )
    con.executemany(
        """INSERT INTO journal_entries (event_id, source, account, plugin_id, mode, at, text)
           VALUES (?, ?, 'ACC-1', 'legacy', 'live', ?, ?)""",
        [(f"J{n}", SOURCES[n % 10], utc_text(NOW - dt.timedelta(minutes=n)), f"note {n}")
         for n in range(100_000)],
    )  # fmt: skip
    body = json.dumps({"type": "trade.opened"})
    con.executemany(
        """INSERT INTO events (event_id, type, source, account, plugin_id, mode, subject, ts,
           stream_id, committed_at, body) VALUES (?, ?, ?, 'ACC-1', 'legacy', 'live', ?, ?,
           '0-1', ?, ?)""",
        [(f"E{n}", "trade.opened", SOURCES[n % 10], f"T{n}", now, now, body)
         for n in range(200_000)],
    )  # fmt: skip
    con.executemany(
        """INSERT INTO trade_status_history (event_id, source, trade_id, status, ts, event_type)
           VALUES (?, ?, ?, 'open', ?, 'trade.opened')""",
        [(f"E{n}", SOURCES[n % 10], f"T{n}", now) for n in range(200_000)],
    )


CASES: list[tuple[str, dict[str, Any]]] = [
    ("active-trades", {}),
    ("active-trades", {"source": "bot-1"}),
    ("active-signals", {"source": "bot-1"}),
    ("positions", {}),
    ("closed-today", {"tz": "Europe/Berlin"}),
    ("history", {}),
    ("history", {"account": "ACC-1", "since": (NOW - dt.timedelta(days=30)).date().isoformat()}),
    ("history", {"symbol": "btc", "offset": 5000}),
    ("pnl", {}),
    ("pnl", {"account": "ACC-1", "tz": "America/New_York"}),
    ("calendar", {}),
    ("calendar", {"source": "bot-3", "tz": "Asia/Kolkata"}),
    ("daily-loss", {}),
    ("plugins", {}),
    ("strategies", {"account": "ACC-2"}),
    ("trade", {"trade_id": "T4242"}),
    ("journal", {"source": "bot-2"}),
]


def measure(db: Path, runs: int) -> bool:
    assert {name for name, _ in CASES} == set(QUERIES), "every query must be measured"
    ok = True
    print(f"{'query':<16} {'filters':<48} {'rows':>6} {'median':>9}  <{TARGET_MS:.0f} ms")
    for name, filters in CASES:
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            result = run_query(db, name, filters)
            times.append((time.perf_counter() - started) * 1000)
        median = statistics.median(times)
        ok &= median < TARGET_MS
        shown = json.dumps(filters)[:48]
        verdict = "yes" if median < TARGET_MS else "NO"
        print(f"{name:<16} {shown:<48} {len(result.rows):>6} {median:>7.1f}ms  {verdict}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("/tmp/bench-queries.db"))
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    have = 0
    if args.db.exists() and not args.rebuild:
        con = sqlite3.connect(args.db)
        have = con.execute("SELECT count(*) FROM trades WHERE status = 'closed'").fetchone()[0]
        migrate(con, upto=len(MIGRATIONS))
        con.close()
    if have < args.trades:
        build(args.db, args.trades)
    else:
        print(f"reusing {args.db} ({have:,} closed trades)")
    return 0 if measure(args.db, args.runs) else 1


if __name__ == "__main__":
    sys.exit(main())
