"""The first proof: an event goes in through the Publisher and comes out as rows."""

from __future__ import annotations

from contracts import AsyncPublisher
from tests.helpers import count, query, running_worker, wait_for
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
