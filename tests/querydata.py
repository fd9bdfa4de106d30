"""A small, known trading history, published through the real path (Publisher ->
stream -> worker -> SQLite or PostgreSQL), for the read-side tests.

``NOW`` is Wednesday 2026-11-18 12:00 UTC. Trade T2 closes at 23:30 UTC on
Tuesday, which is already Wednesday in Europe/Berlin: the time-zone tests rest
on it. Realised P&L (derived by the worker from prices): T2 +20, T3 -40,
T4 +100, bot-b's T1 -5.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from contracts import AsyncPublisher
from contracts.query import QueryError
from contracts.query_db import connect_readonly
from tests.helpers import running_worker, wait_for
from worker.settings import Settings

NOW = dt.datetime(2026, 11, 18, 12, 0, tzinfo=dt.UTC)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


BOT_A: list[tuple[str, dict[str, Any]]] = [
    ("trade.opened", dict(ts=at("2026-11-18T09:00"), trade_id="T1", symbol="BTCUSDT",
                          side="buy", quantity="1", entry_price="100", strategy="breakout",
                          stop_loss="90")),
    ("trade.opened", dict(ts=at("2026-11-16T10:00"), trade_id="T2", symbol="BTCUSDT",
                          side="buy", quantity="2", entry_price="100", strategy="breakout")),
    ("trade.closed", dict(ts=at("2026-11-17T23:30"), trade_id="T2", exit_price="110",
                          exit_reason="take_profit")),
    ("journal.entry", dict(ts=at("2026-11-17T23:31"), text="closed T2 at 110", trade_id="T2")),
    ("trade.opened", dict(ts=at("2026-11-10T10:00"), trade_id="T3", symbol="ETHUSDT",
                          side="sell", quantity="1", entry_price="50", strategy="trend")),
    ("trade.closed", dict(ts=at("2026-11-12T10:00"), trade_id="T3", exit_price="90")),
    ("trade.opened", dict(ts=at("2026-03-01T10:00"), trade_id="T4", symbol="XAUUSD",
                          side="buy", quantity="1", entry_price="100", strategy="trend",
                          plugin_id="p2")),
    ("trade.closed", dict(ts=at("2026-03-05T10:00"), trade_id="T4", exit_price="200",
                          plugin_id="p2")),
    ("signal.emitted", dict(ts=at("2026-11-18T08:00"), signal_id="S1", symbol="SOLUSDT",
                            side="buy", confidence="80")),
    ("signal.emitted", dict(ts=at("2026-11-18T08:05"), signal_id="S2", symbol="ETHUSDT",
                            side="sell")),
    ("signal.closed", dict(ts=at("2026-11-18T10:00"), signal_id="S2", exit_price="95")),
    ("position.updated", dict(ts=at("2026-11-18T09:00"), symbol="ETHUSDT", quantity="2")),
    ("position.updated", dict(ts=at("2026-11-18T09:00"), symbol="SOLUSDT", quantity="0")),
    ("daily_stats.updated", dict(ts=at("2026-11-18T11:00"), date="2026-11-18",
                                 daily_loss_used="1250", daily_loss_limit="5000")),
    ("journal.entry", dict(ts=at("2026-11-18T08:00"), text="morning plan", title="plan")),
    ("journal.entry", dict(ts=at("2026-11-16T08:00"), text="monday notes")),
]  # fmt: skip
BOT_B: list[tuple[str, dict[str, Any]]] = [
    ("trade.opened", dict(ts=at("2025-12-30T12:00"), trade_id="T1", symbol="BTCUSDT",
                          side="buy", quantity="1", entry_price="100", strategy="breakout")),
    ("trade.closed", dict(ts=at("2025-12-31T12:00"), trade_id="T1", exit_price="95")),
    ("signal.emitted", dict(ts=at("2026-11-18T08:00"), signal_id="S1", symbol="BTCUSDT",
                            side="sell")),
]  # fmt: skip


async def publish_history(settings: Settings) -> dict[str, str]:
    """Publish both bots' events, wait until all are committed; returns ids by label."""
    ids: dict[str, str] = {}
    for source, account, events in (("bot-a", "ACC-1", BOT_A), ("bot-b", "ACC-2", BOT_B)):
        async with AsyncPublisher(
            settings.redis_url, source=source, account=account, plugin_id="p1", mode="paper",
            stream=settings.stream,
        ) as pub:  # fmt: skip
            for event_type, fields in events:
                label = f"{source}:{event_type}:{fields.get('trade_id') or fields.get('symbol')}"
                ids[label] = await pub.publish(event_type, **fields)
    total = len(BOT_A) + len(BOT_B)
    await wait_for(lambda: stored_events(settings) == total, what="all events committed")
    return ids


def stored_events(settings: Settings) -> int:
    """Events in the worker's database (SQLite file or PostgreSQL); 0 before it exists."""
    try:
        with connect_readonly(settings.database_url or settings.db) as con:
            return int(con.execute("SELECT count(*) FROM events").fetchone()[0])
    except QueryError:
        return 0


async def seeded(settings: Settings) -> dict[str, str]:
    """A worker that stores the history above, then stops."""
    async with running_worker(settings):
        return await publish_history(settings)
