"""The report: the daily-loss card takes each bot against its own limit, the worst
first; --since/--until bound the history, the calendar and the equity curve."""

from __future__ import annotations

import datetime as dt
from functools import partial
from pathlib import Path

from contracts import AsyncPublisher
from tests.helpers import count, running_worker, wait_for
from tests.helpers import tradescribe as _tradescribe
from tests.querydata import seeded
from worker.report import gather, render
from worker.settings import Settings

tradescribe = partial(_tradescribe, columns=200, channel_key=True)


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
    assert "7,380.00 / 5,000.00" in card
    assert "147.6% used" in card
    assert 'class="over"' in card
    assert "ACC-1 / bot-2" in card
    assert "ACC-1 / bot-1: 0.00 / 10,000.00 (0.0%)" in card


async def test_report_since_until_bound_the_history_calendar_and_curve(
    settings: Settings, tmp_path: Path
) -> None:
    await seeded(settings)  # closed: T4 2026-03-05 +100, T3 11-12 -40, T2 11-17 +20, b's T1 -5
    out = tmp_path / "report.html"
    done = tradescribe("report", "--db", settings.db, "--out", out, "--since", "2026-11-01",
                       "--until", "2026-11-15")  # fmt: skip
    assert done.returncode == 0, done.stderr
    page = out.read_text()
    history = page[page.index('id="widget-history"') :]
    assert "Trade history (latest 1)" in history
    assert "ETHUSDT" in history
    assert "XAUUSD" not in history
    assert "2026-11-17" not in history
    assert page.count('class="day"') == 15  # 2026-11-01 .. 2026-11-15
    assert "2026-11-01 .. 2026-11-15: +55.00" in page  # +100 and -5 before, -40 inside
    bad = tradescribe("report", "--db", settings.db, "--out", out, "--since", "2026-11-20",
                      "--until", "2026-11-15")  # fmt: skip
    assert bad.returncode == 1
    assert "after --until" in bad.stderr
