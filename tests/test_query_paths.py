"""The fast paths of the read side (schema 5) give what the trades themselves give, and
SQLite takes the index each was written for.

Trades here are random rows put straight into a migrated file (ties in closed_at,
null and lower-case symbols, other statuses, a month either side of a DST change),
``trade_days`` summed by the statement ``tradescribe db rebuild`` uses; every answer
is checked against a brute-force computation over the rows in Python.
"""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bench import readdata
from bench.ceiling import create_schema
from contracts.query import parse_filters, run_query
from contracts.query_db import SQLITE, ReadConnection
from contracts.query_model import utc_text
from contracts.query_sql import HISTORY_ORDER, TRADE_ROW
from contracts.query_stats import distinct_trades, raw_where, resolve_symbols, skip_days
from tests.helpers import summary_from_rows, summary_shown
from tests.querydata import NOW
from worker.store import aggregates
from worker.store.projections import TRADES
from worker.store.write import load_rows

ZONES = ("UTC", "Europe/Berlin", "Asia/Kolkata", "America/New_York", "Pacific/Chatham")
SYMBOLS = ["BTCUSDT", "ETHUSDT", "btc-perp", "XAUUSD", "EURUSD", None]


def _trade(rng: random.Random, n: int, closes: list[dt.datetime]) -> dict[str, Any]:
    status = rng.choice(["closed"] * 8 + ["open", "cancelled"])
    closed = rng.choice(closes) if rng.random() < 0.2 else NOW - dt.timedelta(
        seconds=rng.randrange(200 * 86400)
    )  # fmt: skip
    closes.append(closed)  # later trades may tie with it
    pnl = None if rng.random() < 0.05 else round(rng.uniform(-100, 100), rng.choice([0, 2]))
    return {
        "source": f"bot-{rng.randrange(3)}", "trade_id": f"T{n}",
        "account": rng.choice(["ACC-1", "ACC-2"]), "plugin_id": rng.choice(["p1", "p2", None]),
        "mode": rng.choice(["live", "paper"]), "symbol": rng.choice(SYMBOLS),
        "side": rng.choice(["buy", "sell"]), "quantity": 1.0, "entry_price": 100.0,
        "realized_pnl": pnl if status != "open" else None,
        "strategy": rng.choice(["a", "b", None]), "status": status,
        "opened_at": utc_text(closed - dt.timedelta(hours=1)),
        "closed_at": utc_text(closed) if status != "open" else None,
        "created_at": utc_text(closed), "updated_at": utc_text(closed),
        "attributes": "{}", "versions": "{}",
    }  # fmt: skip


@pytest.fixture(scope="module")
def trades_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    db = tmp_path_factory.mktemp("paths") / "paths.db"
    con = sqlite3.connect(db, isolation_level=None)
    create_schema(con)
    rng = random.Random(5)
    closes: list[dt.datetime] = [NOW - dt.timedelta(hours=3)]
    rows = [_trade(rng, n, closes) for n in range(3000)]
    columns = TRADES.all_columns
    con.execute("BEGIN")
    con.executemany(
        f"INSERT INTO trades ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
        [tuple(r.get(c) for c in columns) for r in rows],
    )
    for sql in aggregates.RESUM:
        con.execute(sql)
    con.execute("COMMIT")
    con.close()
    return db, rows


def _closed(rows: list[dict[str, Any]], **eq: Any) -> list[dict[str, Any]]:
    return [
        r
        for r in rows
        if r["status"] == "closed" and all(r[k] == v for k, v in eq.items() if v is not None)
    ]


def _newest_first(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    ordered = sorted(rows, key=lambda r: (r["closed_at"], r["trade_id"]), reverse=True)
    return [(r["source"], r["trade_id"]) for r in ordered]


@pytest.mark.parametrize("text", ["btc", "USD", "perp", "zzz", "t"])
def test_a_symbol_substring_gives_the_rows_and_summary_of_the_substring_test(
    trades_db: tuple[Path, list[dict[str, Any]]], text: str
) -> None:
    db, rows = trades_db
    matching = [r for r in _closed(rows) if r["symbol"] and text.lower() in r["symbol"].lower()]
    for offset, limit in [(0, 100), (40, 7), (0, 3000)]:
        filters = {"symbol": text, "offset": offset, "limit": limit}
        result = run_query(db, "history", filters, now=NOW)
        assert summary_shown(result.summary or {}) == summary_from_rows(matching), filters
        got = [(r["source"], r["trade_id"]) for r in result.rows]
        assert got == _newest_first(matching)[offset : offset + limit], filters
    plugins = run_query(db, "plugins", {"symbol": text}, now=NOW).rows
    assert sum(p["count"] for p in plugins) == len(matching)


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"source": "bot-1"},
        {"account": "ACC-2", "side": "sell"},
        {"strategy": "a", "tz": "Asia/Kolkata", "since": "2026-08-01", "until": "2026-10-15"},
        # whole months from trade_months, the edges (mid-June, early October) from trades
        {"side": "buy", "symbol": "usd", "tz": "America/New_York", "since": "2026-06-15",
         "until": "2026-10-15"},
    ],
)  # fmt: skip
def test_every_page_and_the_summary_equal_the_trades(
    trades_db: tuple[Path, list[dict[str, Any]]], filters: dict[str, Any]
) -> None:
    db, rows = trades_db
    tenancy = {k: filters.get(k) for k in ("source", "account", "side", "strategy")}
    matching = _closed(rows, **tenancy)
    if "symbol" in filters:
        text = filters["symbol"].lower()
        matching = [r for r in matching if r["symbol"] and text in r["symbol"].lower()]
    if "since" in filters:
        zone = ZoneInfo(filters["tz"])
        lo = utc_text(dt.datetime.fromisoformat(filters["since"]).replace(tzinfo=zone))
        hi = utc_text(dt.datetime(2026, 10, 16, tzinfo=zone))
        matching = [r for r in matching if lo <= r["closed_at"] < hi]
    expected = _newest_first(matching)
    for offset in (0, 1, 99, len(expected) // 2, len(expected) - 1, len(expected) + 5):
        result = run_query(db, "history", {**filters, "offset": offset, "limit": 50}, now=NOW)
        assert [(r["source"], r["trade_id"]) for r in result.rows] == expected[offset:][:50]
        assert summary_shown(result.summary or {}) == summary_from_rows(matching)


def test_skipping_whole_days_by_trade_days_names_the_same_page(
    trades_db: tuple[Path, list[dict[str, Any]]],
) -> None:
    """``skip_days`` (used from an offset of 10,000) against the plain offset."""
    db, _ = trades_db
    con = ReadConnection(sqlite3.connect(db), SQLITE)
    columns = ", ".join(TRADE_ROW)
    rng = random.Random(3)
    for filters in [{}, {"source": "bot-2"}, {"tz": "Europe/Berlin", "since": "2026-07-01",
                                             "until": "2026-11-01"}]:  # fmt: skip
        _, f = parse_filters("history", filters)
        lo = f.since and utc_text(dt.datetime.combine(f.since, dt.time(), f.zone))
        end = f.until and f.until + dt.timedelta(days=1)
        hi = end and utc_text(dt.datetime.combine(end, dt.time(), f.zone))
        for offset in [0, 5, *(rng.randrange(2600) for _ in range(20))]:
            new_hi, new_offset = skip_days(con, f, lo, hi, offset)
            pages = []
            for h, o in ((hi, offset), (new_hi, new_offset)):
                where, params = raw_where(SQLITE, f, lo, h)
                order = f" ORDER BY {HISTORY_ORDER} LIMIT 30 OFFSET ?"
                sql = f"SELECT {columns} FROM trades{where}{order}"
                pages.append(con.execute(sql, [*params, o]).fetchall())
            assert pages[0] == pages[1], (filters, offset)
            if offset > 200:
                assert new_offset < offset  # it did skip
    con.con.close()


@pytest.mark.parametrize("tz", ZONES)
def test_the_calendar_from_trade_days_equals_local_days_summed_from_trades(
    trades_db: tuple[Path, list[dict[str, Any]]], tz: str
) -> None:
    db, rows = trades_db
    zone = ZoneInfo(tz)
    for filters in [{}, {"source": "bot-0", "since": "2026-03-20", "until": "2026-11-02"}]:
        result = run_query(db, "calendar", {"tz": tz, **filters}, now=NOW)
        since = dt.date.fromisoformat(result.summary["since"])  # type: ignore[index]
        until = dt.date.fromisoformat(result.summary["until"])  # type: ignore[index]
        days: dict[str, list[Any]] = {}
        for r in _closed(rows, source=filters.get("source")):
            moment = dt.datetime.fromisoformat(r["closed_at"].replace("Z", "+00:00"))
            local = moment.astimezone(zone).date()
            if since <= local <= until:
                d = days.setdefault(local.isoformat(), [0, 0.0, 0, 0])
                p = r["realized_pnl"]
                d[0] += 1
                d[1] += p or 0.0
                d[2] += p is not None and p > 0
                d[3] += p is not None and p < 0
        expected = [(k, v[0], round(v[1], 2) + 0.0, v[2], v[3]) for k, v in sorted(days.items())]
        got = [(r["date"], r["trades"], r["pnl"], r["wins"], r["losses"]) for r in result.rows]
        assert got == expected, (tz, filters)


def test_a_trade_by_id_alone_is_found_in_every_source(
    trades_db: tuple[Path, list[dict[str, Any]]],
) -> None:
    db, rows = trades_db
    for row in rows[::97]:
        found = run_query(db, "trade", {"trade_id": row["trade_id"]}, now=NOW).rows
        assert [(r["source"], r["status"]) for r in found] == [(row["source"], row["status"])]


def test_distinct_values_come_from_a_loose_index_scan(
    trades_db: tuple[Path, list[dict[str, Any]]],
) -> None:
    db, rows = trades_db
    con = ReadConnection(sqlite3.connect(db), SQLITE)
    assert distinct_trades(con, "symbol") == sorted({r["symbol"] for r in rows if r["symbol"]})
    assert distinct_trades(con, "source") == sorted({r["source"] for r in rows})
    _, f = parse_filters("history", {"symbol": "btc"})
    symbols = resolve_symbols(con, f)
    assert symbols is not None
    assert symbols.where() == ("symbol IN (?, ?)", ["BTCUSDT", "btc-perp"])
    assert symbols.where("+") == ("+symbol IN (?, ?)", ["BTCUSDT", "btc-perp"])
    con.con.close()


# --- the plans ------------------------------------------------------------------------


def _plan(con: sqlite3.Connection, sql: str, params: Any = ()) -> str:
    return " | ".join(r[3] for r in con.execute(f"EXPLAIN QUERY PLAN {sql}", params))


def _statements(db: Path, name: str, filters: dict[str, Any]) -> list[str]:
    """The SQL a query runs (bound values inlined), caught by SQLite's trace hook."""
    seen: list[str] = []
    spec, parsed = parse_filters(name, filters)
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    con.set_trace_callback(seen.append)
    spec.run(ReadConnection(con, SQLITE), parsed, NOW)
    con.close()
    return seen


@pytest.fixture(scope="module")
def bench_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("plans") / "bench.db"
    readdata.build(db, 20_000, now=NOW)
    return db


def test_schema_5_keeps_four_indexes_on_trades(bench_db: Path) -> None:
    con = sqlite3.connect(bench_db)
    assert readdata.trade_indexes(con) == [
        "sqlite_autoindex_trades_1", "trades_active", "trades_closed", "trades_symbol_cover",
    ]  # fmt: skip
    con.close()


def test_the_workers_statements_on_trades_use_an_index(bench_db: Path) -> None:
    con = sqlite3.connect(bench_db)
    bucket = ("2026-01-01", "ACC-1", "bot-1", "grid", "live", "trend")
    month = (bucket[0][:7], *bucket[1:], "BTCUSDT", "buy")
    months = _plan(con, aggregates.MONTHS.recompute_sql, (*month, 1.0, 1.0))  # + the P&L that left
    assert months.count("USING COVERING INDEX trades_closed (closed_at>? AND closed_at<?)") == 2
    plan = _plan(con, aggregates.DAYS.recompute_sql, (*bucket, 1.0, 1.0))
    assert (
        plan.count("SEARCH t USING COVERING INDEX trades_closed (closed_at>? AND closed_at<?)") == 2
    )
    seen: list[str] = []
    con.set_trace_callback(seen.append)
    load_rows(con, TRADES, [("bot-1", "T1"), ("bot-1", "T11")])
    con.set_trace_callback(None)
    assert "USING INDEX sqlite_autoindex_trades_1 (source=? AND trade_id=?)" in _plan(con, seen[0])
    con.close()


@pytest.mark.parametrize(
    ("name", "filters", "expected"),
    [
        ("history", {"offset": 5000}, "SEARCH trades USING COVERING INDEX trades_closed"),
        ("history", {"source": "bot-2", "offset": 300}, "USING COVERING INDEX trades_closed"),
        # about 2,500 of 20,000 trades are BTCUSDT: walk for a first page, sort for later ones
        ("history", {"symbol": "btc"}, "USING COVERING INDEX trades_closed"),
        ("history", {"symbol": "btc", "offset": 50}, "USING COVERING INDEX trades_symbol_cover"),
        ("history", {"symbol": "btc", "offset": 5000}, "USING COVERING INDEX trades_symbol_cover"),
        ("active-trades", {"source": "bot-1"}, "USING INDEX trades_active"),
        ("closed-today", {"source": "bot-1"}, "INDEX trades_closed (closed_at>? AND closed_at<?)"),
        ("calendar", {"source": "bot-3", "tz": "Asia/Kolkata"}, "INDEX trades_closed (closed_at>?"),
        ("trade", {"trade_id": "T4242"}, "sqlite_autoindex_trades_1 (source=? AND trade_id=?)"),
    ],
)
def test_each_query_searches_the_index_it_was_written_for(
    bench_db: Path, name: str, filters: dict[str, Any], expected: str
) -> None:
    con = sqlite3.connect(f"file:{bench_db}?mode=ro", uri=True)
    plans = [_plan(con, sql) for sql in _statements(bench_db, name, filters)]
    con.close()
    on_trades = [p for p in plans if " trades " in f"{p} " or " t " in f"{p} "]
    assert any(expected in p for p in on_trades), plans
    scans = [p for p in on_trades if "SCAN trades" in p or "SCAN t " in f"{p} "]
    assert all("SCAN trades USING INDEX trades_active" in p for p in scans), plans  # partial
    if name == "history" and "trades_closed" in expected:  # the page is in index order
        assert not any("TEMP B-TREE" in p for p in on_trades), plans


def test_a_schema_4_file_and_its_migration_to_5_answer_alike(tmp_path: Path) -> None:
    """A reader may be upgraded before the worker: on a schema 4 file (the old indexes,
    no trade_months) every query answers as on schema 5."""
    from worker.store.schema import MIGRATIONS

    db = tmp_path / "v4.db"
    con = sqlite3.connect(db, isolation_level=None)
    for statements in MIGRATIONS[:4]:
        for statement in statements:
            con.execute(statement)
    con.execute("PRAGMA user_version = 4")
    rng = random.Random(11)
    closes = [NOW - dt.timedelta(hours=5)]
    columns = TRADES.all_columns
    con.executemany(
        f"INSERT INTO trades ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
        [tuple(_trade(rng, n, closes).get(c) for c in columns) for n in range(800)],
    )
    con.execute(aggregates.DAYS.backfill_sql)
    cases = [(name, filters) for name, filters in readdata.cases(800, NOW) if name != "trade"]
    cases += [
        ("trade", {"trade_id": "T17"}),
        ("history", {"symbol": "perp", "status": "cancelled"}),
    ]
    before = [run_query(db, n, f, now=NOW).as_dict() for n, f in cases]
    assert len(readdata.trade_indexes(con)) == 11
    for statement in MIGRATIONS[4]:
        con.execute(statement)
    assert readdata.trade_indexes(con) == [
        "sqlite_autoindex_trades_1", "trades_active", "trades_closed", "trades_symbol_cover",
    ]  # fmt: skip
    con.close()
    assert [run_query(db, n, f, now=NOW).as_dict() for n, f in cases] == before
