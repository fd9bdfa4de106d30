"""The report's daily-loss card: each bot against its own limit, the worst first."""

from __future__ import annotations

import datetime as dt

from contracts import AsyncPublisher
from tests.conftest import count, running_worker, wait_for
from worker.report import gather, render
from worker.settings import Settings


async def test_a_bot_past_its_own_limit_drives_the_card_not_the_sum(settings: Settings) -> None:
    now = dt.datetime(2026, 11, 18, 12, 0, tzinfo=dt.UTC)  # the card shows that day
    async with running_worker(settings):
        for source, used, limit in (("bot-1", "0", "10000"), ("bot-2", "7380", "5000")):
            async with AsyncPublisher(settings.redis_url, source=source, account="ACC-1",
                                      stream=settings.stream) as pub:  # fmt: skip
                await pub.publish("daily_stats.updated", date="2026-11-18",
                                  daily_loss_used=used, daily_loss_limit=limit)  # fmt: skip
        await wait_for(lambda: count(settings.db, "daily_stats") == 2, what="both bots' stats")
    page = render(gather(settings.db, {}, now=now), {})
    card = page[page.index('id="widget-daily-loss"') :].split("</section>")[0]
    # summed, the two bots were 7,380 / 15,000 = 49.2 %: bot-2 is at 147.6 % of its own
    assert "49.2%" not in card
    assert "7,380.00 / 5,000.00" in card and "147.6% used" in card and 'class="over"' in card
    assert "ACC-1 / bot-2" in card and "ACC-1 / bot-1: 0.00 / 10,000.00 (0.0%)" in card
