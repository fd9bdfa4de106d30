"""Every query gives the same answer on SQLite and on PostgreSQL.

The same random history (trades opened and closed over eight months, ties in close
times, lower-case and missing symbols, no strategy, several tenants, signals,
positions, journal entries, daily figures) goes through each engine's real write path
(stream -> worker -> store), then every query with every kind of filter runs on both
and the JSON answers are compared whole: rows, their order, summaries, sections.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
import sys
from typing import Any

import pytest
import redis

from bench import readdata
from contracts.events import build_event, to_wire
from contracts.query import run_query
from tests.conftest import database_of
from tests.helpers import make_settings, running_worker, tradescribe, wait_for
from tests.pgfix import create_database_sync
from tests.querydata import NOW, stored_events
from worker.settings import Settings

pytestmark = pytest.mark.timeout(240)

ZONES = ("UTC", "Europe/Berlin", "Asia/Kolkata", "America/New_York", "Pacific/Chatham")
SYMBOLS = ["BTCUSDT", "ETHUSDT", "btc-perp", "XAUUSD", "EURUSD", None]


def _tenant(rng: random.Random) -> dict[str, Any]:
    return {
        "source": f"bot-{rng.randrange(3)}",
        "account": rng.choice(["ACC-1", "ACC-2"]),
        "plugin_id": rng.choice(["p1", "p2"]),
        "mode": rng.choice(["live", "paper"]),
    }


def _trade(rng: random.Random, n: int, closes: list[dt.datetime]) -> list[str]:
    tenant = _tenant(rng)
    closed = rng.choice(closes) if rng.random() < 0.2 else NOW - dt.timedelta(
        seconds=rng.randrange(240 * 86400)
    )  # fmt: skip
    closes.append(closed)
    symbol = rng.choice(SYMBOLS)
    opened = {"trade_id": f"T{n}", "side": rng.choice(["buy", "sell"]), "symbol": symbol,
              "quantity": rng.choice(["1", "0.5", "3"]), "entry_price": "100"}  # fmt: skip
    if (strategy := rng.choice(["a", "b", None])) is not None:
        opened["strategy"] = strategy
    events = []
    if symbol is not None:  # else only its close is heard: no symbol, no P&L
        events.append(build_event("trade.opened", opened, ts=closed - dt.timedelta(hours=3),
                                  **tenant))  # fmt: skip
    if symbol is None or rng.random() < 0.85:  # the others stay open
        price = rng.choice(["90", "95.5", "100", "104.25", "130", "77.77"])
        events.append(build_event("trade.closed", {"trade_id": f"T{n}", "exit_price": price},
                                  ts=closed, **tenant))  # fmt: skip
    return [to_wire(e) for e in events]


def _others(rng: random.Random, n: int) -> list[str]:
    tenant = _tenant(rng)
    ts = NOW - dt.timedelta(seconds=rng.randrange(3 * 86400))
    symbol = rng.choice(["SOLUSDT", "ETHUSDT", "btc-perp"])
    made = [
        build_event("signal.emitted", {"signal_id": f"S{n}", "symbol": symbol, "side": "buy",
                                       "confidence": "70"}, ts=ts, **tenant),
        build_event("position.updated", {"symbol": symbol, "quantity": str(n % 3)}, ts=ts,
                    **tenant),
        build_event("journal.entry", {"text": f"note {n}", "trade_id": f"T{n}"}, ts=ts, **tenant),
        build_event("daily_stats.updated", {"date": ts.date().isoformat(),
                                            "daily_loss_used": str(10 * n),
                                            "daily_loss_limit": "500"}, ts=ts, **tenant),
    ]  # fmt: skip
    if n % 2:
        made.append(build_event("signal.closed", {"signal_id": f"S{n}", "exit_price": "99"},
                                ts=ts + dt.timedelta(minutes=5), **tenant))  # fmt: skip
    return [to_wire(e) for e in made]


def _history() -> list[str]:
    rng = random.Random(17)
    closes = [NOW - dt.timedelta(hours=2)]
    bodies = [body for n in range(400) for body in _trade(rng, n, closes)]
    bodies += [body for n in range(40) for body in _others(rng, n)]
    return bodies


def _cases() -> list[tuple[str, dict[str, Any]]]:
    cases = readdata.cases(400, NOW)
    for tz in ZONES:
        cases += [
            ("pnl", {"tz": tz}),
            ("calendar", {"tz": tz, "since": "2026-03-01", "until": "2026-11-18"}),
            ("calendar", {"tz": tz, "source": "bot-1"}),
            ("history", {"tz": tz, "since": "2026-10-30", "until": "2026-11-02", "limit": 500}),
            ("closed-today", {"tz": tz}),
            ("closed-today", {"tz": tz, "kind": "signals"}),
            ("journal", {"tz": tz}),
            ("strategies", {"tz": tz, "since": "2026-06-01"}),
        ]
    cases += [
        ("history", {"symbol": "BTC", "limit": 50, "offset": 10}),
        ("history", {"symbol": "perp", "side": "sell", "strategy": "a"}),
        ("history", {"status": "open", "limit": 1000}),
        ("history", {"plugin_id": "p2", "mode": "live", "limit": 1000}),
        ("history", {"limit": 7, "offset": 300}),
        ("plugins", {"since": "2026-09-01", "until": "2026-10-31", "tz": "Europe/Berlin"}),
        ("strategies", {"symbol": "usd", "side": "buy"}),
        ("active-trades", {"symbol": "btc"}),
        ("active-signals", {}),
        ("positions", {"account": "ACC-2"}),
        ("daily-loss", {"date": (NOW - dt.timedelta(days=1)).date().isoformat()}),
        ("trade", {"trade_id": "T7"}),
        ("trade", {"trade_id": "T12", "source": "bot-0"}),
    ]
    return cases


async def _write(settings: Settings, bodies: list[str], client: redis.Redis) -> None:
    pipe = client.pipeline(transaction=False)
    for body in bodies:
        pipe.xadd(settings.stream, {"event": body})
    pipe.execute()
    async with running_worker(settings):
        await wait_for(lambda: stored_events(settings) == len(bodies), 60, what="all stored")


async def test_every_query_answers_alike_on_sqlite_and_postgresql(
    settings: Settings,
    redis_url: str,
    names: dict[str, str],
    sync_redis: redis.Redis,
    postgres_admin_url: str,
) -> None:
    bodies = _history()
    pg = make_settings(create_database_sync(postgres_admin_url), redis_url,  # type: ignore[arg-type]
                       {**names, "stream": names["stream"] + ":pg"})  # fmt: skip
    for engine in (settings, pg):
        await _write(engine, bodies, sync_redis)
    compared = 0
    rows = 0
    for name, filters in _cases():
        lite = run_query(database_of(settings), name, filters, now=NOW).as_dict()
        post = run_query(database_of(pg), name, filters, now=NOW).as_dict()
        for answer in (lite, post):  # when each worker committed: its own clock
            for event in answer["sections"].get("events", []):
                event.pop("committed_at")
        assert json.dumps(post) == json.dumps(lite), (name, filters)
        compared += 1
        rows += len(lite["rows"])
    print(f"{compared} queries, {rows} rows: the same answer on both engines")
    assert compared > 60
    assert rows > 1000


def test_a_postgresql_url_that_cannot_be_read_is_one_line(postgres_admin_url: str) -> None:
    nobody = "postgresql://nobody@/nowhere?host=/nonexistent-socket-folder"
    empty = create_database_sync(postgres_admin_url)
    for url, expected in (
        (nobody, "error: cannot connect to PostgreSQL at postgresql://nobody@/nowhere"),
        (empty, "is not a tradescribe database (or not migrated yet)"),
    ):
        proc = tradescribe("query", "pnl", "--db", url)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert expected in proc.stderr
        assert "Traceback" not in proc.stderr


def test_the_driver_is_imported_only_for_a_url_and_its_absence_names_the_extra() -> None:
    code = """
import sys
import contracts.query
assert "psycopg" not in sys.modules, "imported for SQLite"
sys.modules["psycopg"] = None  # as if the [postgres] extra were not installed
try:
    contracts.query.run_query("postgresql://u@/db?host=/nowhere", "pnl")
except contracts.query.QueryError as exc:
    print(exc)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)  # fmt: skip
    assert done.stdout.strip() == (
        "reading PostgreSQL needs the psycopg driver: pip install 'tradescribe[postgres]'"
    )
