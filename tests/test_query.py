"""The read side, on a history published through the real path (see tests/querydata.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from contracts import AsyncPublisher, new_event_id
from contracts.query import QUERIES, QueryError, Reader, run_query, wait_for_event
from tests.helpers import running_worker
from tests.querydata import NOW
from worker.settings import Settings


def q(db: Path, name: str, **filters: Any) -> Any:
    result = run_query(db, name, filters, now=NOW)
    json.dumps(result.as_dict())  # every answer must be plain JSON
    return result


def keys(rows: list[dict[str, Any]], *names: str) -> list[tuple[Any, ...]]:
    return [tuple(r[n] for n in names) for r in rows]


async def test_restarting_bot_restores_its_active_trades_signals_and_positions(
    history_db: Path,
) -> None:
    bot_a = Reader(history_db, source="bot-a")
    trades = bot_a.active_trades()
    assert keys(trades, "trade_id", "symbol", "status", "stop_loss") == [
        ("T1", "BTCUSDT", "open", 90.0)
    ]
    assert keys(bot_a.active_signals(), "signal_id", "symbol") == [("S1", "SOLUSDT")]
    assert keys(bot_a.positions(), "symbol", "quantity") == [("ETHUSDT", 2.0)]
    everyone = Reader(history_db)
    assert keys(everyone.active_signals(), "source", "signal_id") == [
        ("bot-a", "S1"),
        ("bot-b", "S1"),
    ]
    assert keys(everyone.active_signals(account="ACC-2"), "source") == [("bot-b",)]
    assert everyone.active_trades(mode="live") == []


async def test_history_summary_counts_wins_losses_and_profit_factor(history_db: Path) -> None:
    result = q(history_db, "history")
    assert keys(result.rows, "source", "trade_id", "realized_pnl") == [
        ("bot-a", "T2", 20.0),
        ("bot-a", "T3", -40.0),
        ("bot-a", "T4", 100.0),
        ("bot-b", "T1", -5.0),
    ]
    assert result.summary == {
        "count": 4, "wins": 2, "losses": 2, "win_rate": 50.0, "gross_profit": 120.0,
        "gross_loss": -45.0, "net": 75.0, "average": 18.75, "best": 100.0, "worst": -40.0,
        "profit_factor": 2.667, "limit": 100, "offset": 0,
    }  # fmt: skip
    mine = q(history_db, "history", source="bot-a").summary
    assert (mine["count"], mine["win_rate"], mine["net"], mine["profit_factor"]) == (
        3, 66.67, 80.0, 3.0,
    )  # fmt: skip


async def test_history_filters_by_dates_symbol_side_strategy_and_pages(history_db: Path) -> None:
    def ids(**filters: Any) -> list[tuple[Any, ...]]:
        return keys(q(history_db, "history", **filters).rows, "source", "trade_id")

    november = ids(since="2026-11-01", until="2026-11-30")
    assert november == [("bot-a", "T2"), ("bot-a", "T3")]
    assert ids(symbol="btc") == [("bot-a", "T2"), ("bot-b", "T1")]
    assert ids(side="sell") == [("bot-a", "T3")]
    assert ids(strategy="trend") == [("bot-a", "T3"), ("bot-a", "T4")]
    assert ids(limit=1, offset=1) == [("bot-a", "T3")]
    assert q(history_db, "history", limit=1, offset=1).summary["count"] == 4
    assert ids(plugin_id="p2") == [("bot-a", "T4")]


async def test_pnl_periods_follow_the_time_zone_and_weeks_start_on_monday(history_db: Path) -> None:
    def periods(**filters: Any) -> dict[str, tuple[int, float]]:
        return {r["period"]: (r["trades"], r["pnl"]) for r in q(history_db, "pnl", **filters).rows}

    assert periods() == {
        "all_time": (4, 75.0), "year": (3, 80.0), "month": (2, -20.0),
        "week": (1, 20.0), "today": (0, 0.0),
    }  # fmt: skip
    # 23:30 UTC on Tuesday is 00:30 on Wednesday in Berlin: T2 closed "today" there.
    assert periods(tz="Europe/Berlin")["today"] == (1, 20.0)
    assert periods(account="ACC-2") == {
        "all_time": (1, -5.0), "year": (0, 0.0), "month": (0, 0.0),
        "week": (0, 0.0), "today": (0, 0.0),
    }  # fmt: skip


async def test_calendar_gives_daily_pnl_by_local_day(history_db: Path) -> None:
    utc = q(history_db, "calendar", since="2026-11-01", until="2026-11-30")
    assert keys(utc.rows, "date", "trades", "pnl") == [("2026-11-12", 1, -40.0),
                                                       ("2026-11-17", 1, 20.0)]  # fmt: skip
    berlin = q(history_db, "calendar", since="2026-11-01", until="2026-11-30", tz="Europe/Berlin")
    assert keys(berlin.rows, "date", "pnl") == [("2026-11-12", -40.0), ("2026-11-18", 20.0)]
    assert berlin.summary["net"] == -20.0
    year = q(history_db, "calendar", until="2026-11-18")
    assert [r["date"] for r in year.rows] == [
        "2025-12-31",
        "2026-03-05",
        "2026-11-12",
        "2026-11-17",
    ]


async def test_closed_today_lists_trades_or_signals_in_the_time_zone(history_db: Path) -> None:
    assert q(history_db, "closed-today").rows == []
    berlin = q(history_db, "closed-today", tz="Europe/Berlin")
    assert keys(berlin.rows, "trade_id", "realized_pnl") == [("T2", 20.0)]
    signals = q(history_db, "closed-today", kind="signals")
    assert keys(signals.rows, "signal_id", "status", "exit_price") == [("S2", "closed", 95.0)]


async def test_daily_loss_reports_used_against_the_limit(history_db: Path) -> None:
    result = q(history_db, "daily-loss")
    assert result.summary == {"date": "2026-11-18", "used": 1250.0, "limit": 5000.0,
                              "percent": 25.0, "blocked": False}  # fmt: skip
    assert keys(result.rows, "source", "percent") == [("bot-a", 25.0)]
    assert q(history_db, "daily-loss", date="2026-11-17").summary["limit"] is None


async def test_plugin_and_strategy_statistics(history_db: Path) -> None:
    plugins = q(history_db, "plugins")
    assert keys(plugins.rows, "plugin_id", "count", "wins", "net", "best", "worst") == [
        ("p2", 1, 1, 100.0, 100.0, 100.0),
        ("p1", 3, 1, -25.0, 20.0, -40.0),
    ]
    strategies = q(history_db, "strategies")
    assert keys(strategies.rows, "strategy", "count", "net", "win_rate") == [
        ("trend", 2, 60.0, 50.0),
        ("breakout", 2, 15.0, 50.0),
    ]


async def test_trade_shows_its_status_history_and_events(history_db: Path) -> None:
    result = q(history_db, "trade", trade_id="T2", source="bot-a")
    assert keys(result.rows, "trade_id", "status", "realized_pnl") == [("T2", "closed", 20.0)]
    history = result.sections["status_history"]
    assert keys(history, "status", "event_type") == [("open", "trade.opened"),
                                                     ("closed", "trade.closed")]  # fmt: skip
    events = result.sections["events"]
    assert [e["type"] for e in events] == ["trade.opened", "trade.closed", "journal.entry"]
    assert events[2]["body"]["data"]["text"] == "closed T2 at 110"
    both = q(history_db, "trade", trade_id="T1")
    assert [r["source"] for r in both.rows] == ["bot-a", "bot-b"]


async def test_journal_lists_the_days_entries(history_db: Path) -> None:
    assert [r["text"] for r in q(history_db, "journal").rows] == ["morning plan"]
    berlin = q(history_db, "journal", tz="Europe/Berlin")
    assert [r["text"] for r in berlin.rows] == ["closed T2 at 110", "morning plan"]
    assert [r["text"] for r in q(history_db, "journal", date="2026-11-16").rows] == ["monday notes"]


async def test_a_bot_reads_its_own_write_at_once(settings: Settings) -> None:
    async with running_worker(settings):
        async with AsyncPublisher(
            settings.redis_url, source="bot-c", stream=settings.stream
        ) as pub:
            event_id = await pub.publish("trade.opened", trade_id="C1", symbol="EURUSD",
                                         side="buy", quantity="1", entry_price="1.08")  # fmt: skip
            filters = {"source": "bot-c", "wait_for": event_id, "wait_timeout_s": 10}
            result = await anyio.to_thread.run_sync(
                lambda: run_query(settings.db, "active-trades", filters)
            )
        assert keys(result.rows, "trade_id", "status") == [("C1", "open")]
        assert await anyio.to_thread.run_sync(wait_for_event, settings.db, event_id, 1.0)
        never = new_event_id()
        assert not await anyio.to_thread.run_sync(wait_for_event, settings.db, never, 0.05)
        with pytest.raises(QueryError, match=r"not committed within 0\.05s"):
            run_query(settings.db, "pnl", {"wait_for": never, "wait_timeout_s": 0.05})


@pytest.mark.parametrize(
    ("name", "filters", "message"),
    [
        ("nope", {}, "unknown query 'nope'; choose one of: active-trades"),
        ("pnl", {"symbol": "BTC"}, "query 'pnl' does not take symbol; it takes: account"),
        ("history", {"tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ("history", {"limit": 0}, "limit: Input should be greater than or equal to 1"),
        ("history", {"since": "yesterday"}, "since: Input should be a valid date"),
        ("trade", {}, "the trade query needs trade_id"),
        ("active-trades", {"source": "x' OR 1=1 --"}, None),
    ],
)
async def test_bad_filters_get_one_clear_error(
    history_db: Path, name: str, filters: dict[str, Any], message: str | None
) -> None:
    if message is None:  # hostile text is a value, never SQL
        assert q(history_db, name, **filters).rows == []
        return
    with pytest.raises(QueryError, match=message.replace("(", r"\(")):
        q(history_db, name, **filters)


def test_missing_database_says_which_file_and_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(QueryError, match=r"missing\.db does not exist; pass the worker's file"):
        run_query(tmp_path / "missing.db", "pnl", {})
    assert not (tmp_path / "missing.db").exists()


def test_every_query_takes_the_tenancy_filters() -> None:
    for spec in QUERIES.values():
        assert {"account", "source", "plugin_id", "mode", "wait_for"} <= set(spec.filters)
