"""The fast sums (``trade_days``, kept by triggers) say what the trades themselves say."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import pytest

from contracts import AsyncPublisher
from contracts.query import run_query
from tests.conftest import count, query, running_worker, wait_for
from tests.querydata import NOW
from worker.settings import Settings

ZONES = ("UTC", "Europe/Berlin", "Asia/Kolkata", "America/New_York")


def summary_from_rows(rows: list[dict[str, Any]]) -> tuple[Any, ...]:
    pnl = [r["realized_pnl"] for r in rows]
    return (
        len(rows),
        sum(p > 0 for p in pnl),
        sum(p < 0 for p in pnl),
        round(sum(p for p in pnl if p > 0), 2),
        round(sum(p for p in pnl if p < 0), 2),
        max(pnl, default=None),
        min(pnl, default=None),
    )


def summary_shown(s: dict[str, Any]) -> tuple[Any, ...]:
    return (s["count"], s["wins"], s["losses"], s["gross_profit"], s["gross_loss"], s["best"],
            s["worst"])  # fmt: skip


async def test_summaries_match_the_trades_in_every_zone_and_range(settings: Settings) -> None:
    rng = random.Random(7)
    async with running_worker(settings):
        async with AsyncPublisher(
            settings.redis_url, source="bot-s", stream=settings.stream
        ) as pub:
            for n in range(60):
                closed = NOW - dt.timedelta(hours=rng.randrange(24 * 40))
                exit_price = str(rng.choice([90, 95, 100, 104, 110, 130]))
                await pub.publish("trade.opened", ts=closed - dt.timedelta(hours=1),
                                  trade_id=f"S{n}", symbol="BTCUSDT", side="buy", quantity="1",
                                  entry_price="100", strategy=rng.choice(["a", "b"]))  # fmt: skip
                await pub.publish("trade.closed", ts=closed, trade_id=f"S{n}",
                                  exit_price=exit_price)  # fmt: skip
        await wait_for(lambda: count(settings.db, "events") == 120, what="120 events")
    db = settings.db
    for tz in ZONES:
        for since, until in [(None, None), ("2026-10-20", "2026-11-02"), ("2026-11-18", None)]:
            filters = {"tz": tz, "since": since, "until": until, "limit": 1000}
            result = run_query(db, "history", filters, now=NOW)
            assert summary_shown(result.summary) == summary_from_rows(result.rows), filters
            # the calendar's days add up to the same net
            cal = run_query(db, "calendar", {"tz": tz, "since": since or "2026-09-01",
                                             "until": until or "2026-11-18"}, now=NOW)  # fmt: skip
            assert cal.summary["net"] == round(result.summary["net"], 2), filters
            assert sum(d["trades"] for d in cal.rows) == result.summary["count"], filters
        strategies = run_query(db, "strategies", {"tz": tz}, now=NOW).rows
        assert sum(r["count"] for r in strategies) == 60


async def test_a_corrected_or_reopened_trade_changes_the_sums(settings: Settings) -> None:
    async with running_worker(settings):
        async with AsyncPublisher(
            settings.redis_url, source="bot-r", stream=settings.stream
        ) as pub:
            ts = NOW - dt.timedelta(hours=2)
            # the close arrives before the open: the sums must still converge
            await pub.publish("trade.closed", ts=ts, trade_id="R1", exit_price="120")
            await pub.publish(
                "trade.opened", ts=ts - dt.timedelta(hours=1), trade_id="R1",
                symbol="ETHUSDT", side="buy", quantity="2", entry_price="100",
            )  # fmt: skip
            await pub.publish("trade.opened", ts=ts, trade_id="R2", symbol="ETHUSDT", side="buy",
                              quantity="1", entry_price="100")  # fmt: skip
            await pub.publish("trade.closed", ts=ts, trade_id="R2", exit_price="90")
        await wait_for(lambda: count(settings.db, "events") == 4, what="4 events")
        first = run_query(settings.db, "history", {}, now=NOW).summary
        assert (first["count"], first["net"], first["best"], first["worst"]) == (2, 30.0, 40.0,
                                                                                -10.0)  # fmt: skip
        async with AsyncPublisher(
            settings.redis_url, source="bot-r", stream=settings.stream
        ) as pub:
            # the broker reports the real P&L later: it replaces the derived one
            await pub.publish("trade.updated", ts=ts + dt.timedelta(minutes=5), trade_id="R1",
                              realized_pnl="35.5")  # fmt: skip
        await wait_for(lambda: count(settings.db, "events") == 5, what="5 events")
    after = run_query(settings.db, "history", {}, now=NOW).summary
    assert (after["count"], after["net"], after["best"]) == (2, 25.5, 35.5)
    days = query(settings.db, "SELECT trades, round(gross_profit, 2) FROM trade_days")
    assert days == [(2, 35.5)]


@pytest.mark.parametrize("tz", ZONES)
def test_pnl_of_an_empty_database_is_zero(tmp_path: Path, tz: str) -> None:
    import sqlite3

    from worker.schema import MIGRATIONS

    db = tmp_path / "empty.db"
    con = sqlite3.connect(db)
    for statements in MIGRATIONS:
        for statement in statements:
            con.execute(statement)
    con.commit()
    con.close()
    rows = run_query(db, "pnl", {"tz": tz}).rows
    assert [(r["trades"], r["pnl"]) for r in rows] == [(0, 0.0)] * 5
    assert run_query(db, "history", {}).summary["win_rate"] is None


def test_trade_days_equal_the_trades_after_any_writes() -> None:
    """Upsert, update and delete in random order: the triggers keep every day exact."""
    import sqlite3

    from worker.schema import MIGRATIONS

    con = sqlite3.connect(":memory:", isolation_level=None)
    for statements in MIGRATIONS:
        for statement in statements:
            con.execute(statement)
    bucket = "substr(closed_at, 1, 10), source, coalesce(strategy, '')"
    raw_sql = f"""SELECT {bucket}, count(*), sum(coalesce(realized_pnl > 0, 0)),
        round(total(realized_pnl), 6) + 0.0, max(realized_pnl), min(realized_pnl) FROM trades
        WHERE status = 'closed' AND closed_at IS NOT NULL GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""
    days_sql = """SELECT day, source, strategy, trades, wins,
        round(gross_profit + gross_loss, 6) + 0.0, best, worst FROM trade_days
        WHERE trades > 0 ORDER BY 1, 2, 3"""
    cols = "source, trade_id, status, closed_at, realized_pnl, strategy, created_at, updated_at"
    rng = random.Random(2)
    for _ in range(1500):
        key = (rng.choice("ab"), f"T{rng.randrange(40)}")
        op = rng.random()
        if op < 0.1:
            con.execute("DELETE FROM trades WHERE source = ? AND trade_id = ?", key)
        elif op < 0.2:
            pnl = rng.choice([None, rng.uniform(-5, 5)])
            con.execute("UPDATE trades SET realized_pnl = ? WHERE source = ? AND trade_id = ?",
                        (pnl, *key))  # fmt: skip
        else:
            closed = rng.choice([None, f"2026-11-{rng.randint(10, 12)}T10:00:00.000000Z"])
            values = (*key, rng.choice(["open", "closed", "closed", "cancelled"]), closed,
                      rng.choice([None, round(rng.uniform(-5, 5), 2), 0.0]),
                      rng.choice(["s", "t", None]), "x", "x")  # fmt: skip
            # the store's own write: an upsert (insert, or update the stored row)
            con.execute(
                f"INSERT INTO trades ({cols}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (source, trade_id) DO UPDATE SET status = excluded.status, "
                "closed_at = excluded.closed_at, realized_pnl = excluded.realized_pnl, "
                "strategy = excluded.strategy",
                values,
            )
        assert con.execute(days_sql).fetchall() == con.execute(raw_sql).fetchall()
