"""The first proof: an event goes in through the Publisher and comes out as rows."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from contracts import AsyncPublisher
from tests.helpers import count, query, running_worker, wait_for
from worker.cli.demo import SYMBOLS
from worker.cli.demo_history import history_events, publish_history
from worker.settings import Settings


async def test_trade_opened_is_stored_as_an_open_trade(settings: Settings) -> None:
    async with running_worker(settings):
        async with AsyncPublisher(
            settings.redis_url, source="bot-a", stream=settings.stream
        ) as pub:
            event_id = await pub.publish(
                "trade.opened", trade_id="T1", symbol="BTCUSDT", side="buy",
                quantity="0.5", entry_price="43000.5",
            )  # fmt: skip
        await wait_for(lambda: count(settings.db, "events") == 1, what="the event row")
    rows = query(settings.db, "SELECT event_id FROM events")
    assert rows == [(event_id,)]
    trade = query(settings.db, "SELECT symbol, side, quantity, entry_price, status FROM trades")
    assert trade == [("BTCUSDT", "buy", 0.5, 43000.5, "open")]


# The demo's history (worker/cli/demo_history.py): weeks of closed trades per bot.

REASONS_AGAINST_SIGN = """SELECT count(*) FROM trades WHERE status = 'closed'
    AND ((exit_reason = 'take_profit' AND realized_pnl <= 0)
         OR (exit_reason = 'stop_loss' AND realized_pnl >= 0))"""


async def test_demo_history_spans_weeks_is_plausible_and_is_stored_once(settings: Settings) -> None:
    today = dt.date(2026, 12, 4)
    start = {s: float(p) for s, p in SYMBOLS.items()}
    events = history_events(3, start, today)
    async with running_worker(settings) as worker:
        sent = publish_history(settings.redis_url, settings.stream, events)
        await wait_for(lambda: count(settings.db, "events") == sent, what="the history")
        # The same history again (a re-run): every event is refused as a duplicate.
        assert publish_history(settings.redis_url, settings.stream, events) == sent
        await wait_for(lambda: worker.stats.duplicates == sent, what="the duplicates")
    assert count(settings.db, "events") == sent
    assert count(settings.db, "dead_letters") == 0
    first, last, days = query(
        settings.db,
        "SELECT min(opened_at), max(closed_at), count(DISTINCT substr(closed_at, 1, 10)) "
        "FROM trades WHERE status = 'closed'",
    )[0]
    span = dt.datetime.fromisoformat(last) - dt.datetime.fromisoformat(first)
    assert span >= dt.timedelta(weeks=4), (first, last)
    assert dt.datetime.fromisoformat(last).date() < today  # all of it in the past
    assert days >= 28
    assert count(settings.db, "trades", "status != 'closed'") == 0
    assert query(settings.db, REASONS_AGAINST_SIGN) == [(0,)]
    reasons = dict(query(settings.db, "SELECT exit_reason, count(*) FROM trades GROUP BY 1"))
    assert set(reasons) == {"take_profit", "stop_loss", "time", "manual"}, reasons
    wins, losses = query(
        settings.db, "SELECT sum(realized_pnl > 0), sum(realized_pnl < 0) FROM trades"
    )[0]
    assert 0.3 < wins / (wins + losses) < 0.7, (wins, losses)
    for symbol, low, high in query(
        settings.db, "SELECT symbol, min(entry_price), max(entry_price) FROM trades GROUP BY 1"
    ):
        assert SYMBOLS[symbol] / 2 < low <= high < SYMBOLS[symbol] * 2, (symbol, low, high)


@pytest.mark.slow
def test_the_demo_starts_with_weeks_of_history_and_honest_exit_reasons(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRADESCRIBE_")}
    out = subprocess.run(
        [sys.executable, "-m", "worker.cli", "demo", "--seconds", "1", "--no-dashboard",
         "--db", str(db), "--json"],
        env=clean, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["history_events"] > 1000
    assert summary["rows"]["events"] + summary["rows"]["dead_letters"] == summary["published"]
    span = summary["span"]
    opened = dt.datetime.fromisoformat(span["first_opened"])
    closed = dt.datetime.fromisoformat(span["last_closed"])
    assert closed - opened >= dt.timedelta(weeks=4), span
    assert span["days_with_closes"] >= 28
    assert count(db, "trades", "trade_id LIKE '%-T%'") > 0  # the live bots traded too
    assert query(db, REASONS_AGAINST_SIGN) == [(0,)]
