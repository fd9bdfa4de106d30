"""The fast sums (``trade_days``, kept by the worker) say what the trades themselves say."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import pytest

from contracts import AsyncPublisher
from contracts.events import build_event, to_wire
from contracts.query import run_query
from tests.helpers import count, query, running_worker, summary_from_rows, summary_shown, wait_for
from tests.querydata import NOW
from worker.settings import Settings
from worker.store.batch import Decoded

ZONES = ("UTC", "Europe/Berlin", "Asia/Kolkata", "America/New_York")


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

    from worker.store.schema import MIGRATIONS

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


def _random_trade_event(rng: random.Random, n: int) -> Decoded:
    """A trade event of one of 30 trades, sent in any order: opens, updates, closes,
    late P&L corrections, a close moved to another day or strategy."""
    trade_id = f"T{rng.randrange(30)}"
    ts = dt.datetime(2026, 11, 10, tzinfo=dt.UTC) + dt.timedelta(minutes=rng.randrange(5000))
    kind = rng.choice(["trade.opened", "trade.updated", "trade.updated", "trade.closed"])
    data: dict[str, Any] = {"trade_id": trade_id}
    if kind == "trade.opened":
        data |= {"symbol": "BTCUSDT", "side": rng.choice(["buy", "sell"]), "quantity": "1",
                 "entry_price": "100"}  # fmt: skip
    if kind == "trade.closed":
        data["exit_price"] = str(rng.choice([90, 100, 110]))
    if kind != "trade.opened" and rng.random() < 0.5:
        data["realized_pnl"] = str(round(rng.uniform(-5, 5), 2))
    if rng.random() < 0.2:
        data["strategy"] = rng.choice(["s", "t"])
    if kind == "trade.updated" and rng.random() < 0.2:
        data["status"] = rng.choice(["open", "cancelled"])
    if kind != "trade.opened" and rng.random() < 0.2:
        data["closed_at"] = f"2026-11-{rng.randint(10, 12)}T10:00:00+00:00"
    event = build_event(kind, data, source=rng.choice("ab"), ts=ts)
    return Decoded(f"{n + 1}-0", to_wire(event), event)


def test_trade_days_equal_the_trades_after_any_events(tmp_path: Path) -> None:
    """Random trade events, in batches, through the worker's two ways of planning
    (from its cache of rows, and from the rows read in the transaction): after every
    batch the per-day sums it keeps equal the sums of the trades themselves."""
    import sqlite3

    from bench.ceiling import create_schema
    from worker.store.batch import plan_batch
    from worker.store.write import DbRows, RowCache, write_planned

    db = tmp_path / "days.db"
    con = sqlite3.connect(db, isolation_level=None)
    create_schema(con)
    cache = RowCache(con, limit=25)  # smaller than the trades: rows come and go
    bucket = "substr(closed_at, 1, 10), source, coalesce(strategy, '')"
    raw_sql = f"""SELECT {bucket}, count(*), sum(coalesce(realized_pnl > 0, 0)),
        round(total(realized_pnl), 6) + 0.0, max(realized_pnl), min(realized_pnl) FROM trades
        WHERE status = 'closed' AND closed_at IS NOT NULL GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""
    days_sql = """SELECT day, source, strategy, sum(trades), sum(wins),
        round(total(gross_profit + gross_loss), 6) + 0.0, max(best), min(worst) FROM trade_days
        WHERE trades > 0 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""
    # trade_months (schema 5): the same per UTC month, symbol and side
    month_bucket = "substr(closed_at, 1, 7), source, coalesce(strategy, ''), coalesce(side, '')"
    raw_months_sql = f"""SELECT {month_bucket}, count(*), sum(coalesce(realized_pnl < 0, 0)),
        round(total(realized_pnl), 6) + 0.0, max(realized_pnl), min(realized_pnl) FROM trades
        WHERE status = 'closed' AND closed_at IS NOT NULL GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"""
    months_sql = """SELECT month, source, strategy, side, sum(trades), sum(losses),
        round(total(gross_profit + gross_loss), 6) + 0.0, max(best), min(worst) FROM trade_months
        WHERE trades > 0 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"""
    rng = random.Random(2)
    n = 0
    for _ in range(150):
        batch = [_random_trade_event(rng, n + i) for i in range(rng.randint(1, 12))]
        n += len(batch)
        now = "2026-11-22T00:00:00.000000Z"
        if rng.random() < 0.2:
            cache.clear()  # what a failed batch does
            write_planned(con, plan_batch(batch, [], now), DbRows(con))
        else:
            write_planned(con, plan_batch(batch, [], now), cache)
        assert con.execute(days_sql).fetchall() == con.execute(raw_sql).fetchall()
        assert con.execute(months_sql).fetchall() == con.execute(raw_months_sql).fetchall()
    closed = con.execute("SELECT count(*) FROM trades WHERE status = 'closed'").fetchone()[0]
    assert closed > 5
    assert cache.hits > 0
    assert cache.misses > 0
    con.close()
