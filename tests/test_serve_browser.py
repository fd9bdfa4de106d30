"""The dashboard in a real browser: Debian's chromium driven by Playwright
(launched from /usr/bin/chromium; never `playwright install`)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from contracts import Publisher
from contracts.query import wait_for_event
from tests.helpers import WorkerProcess
from tests.helpers import tradescribe as _tradescribe
from tests.querydata import seeded
from tests.servefix import ServeProcess, serve_process, token
from worker.settings import Settings

__all__ = ["serve_process"]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update",
        "--disable-sync"]  # fmt: skip
SCREENSHOT = Path(__file__).parents[1] / "docs" / "img" / "dashboard.png"

tradescribe = partial(_tradescribe, columns=200, channel_key=True)


def chromium() -> str | None:
    for path in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if path and Path(path).exists():
            return path
    return None


@pytest.fixture
def seeded_db(settings: Settings) -> Path:
    """The read-side history (before the browser: Playwright runs its own loop)."""
    anyio.run(seeded, settings)  # bot-a on ACC-1 (all time +80), bot-b on ACC-2
    return settings.db


@pytest.fixture
def browser() -> Iterator[Browser]:
    path = chromium()
    if path is None:
        pytest.skip("no chromium (Debian: apt-get install -y chromium); .ci/run installs it")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=path, args=ARGS)
        yield launched
        launched.close()


def log_in(browser: Browser, url: str, secret: str, **context: Any) -> Page:
    page = browser.new_context(**context).new_page()
    page.goto(url + "/")
    page.fill("#token", secret)
    page.click("button[type=submit]")
    page.wait_for_selector("body[data-rendered]", timeout=15_000)
    return page


def test_dashboard_shows_a_new_trade_and_pnl_within_3s_without_reload(
    seeded_db: Path,
    browser: Browser,
    settings: Settings,
    tmp_path: Path,
    worker_process: Callable[..., WorkerProcess],
    serve_process: Any,
) -> None:
    worker_process()
    tokens = tmp_path / "tokens.db"
    server: ServeProcess = serve_process(settings.db, tokens)
    page = log_in(browser, server.url, token(tokens, "a", "ACC-1"), timezone_id="Europe/Berlin")
    all_time = page.locator('.fig[data-period="all_time"] b')
    assert all_time.inner_text() == "+80.00"
    assert "times in Europe/Berlin" in page.inner_text("header")
    page.evaluate("window.notReloaded = true")

    with Publisher(settings.redis_url, source="bot-a", account="ACC-1",
                   stream=settings.stream) as pub:  # fmt: skip
        started = time.monotonic()
        pub.publish("trade.opened", trade_id="LIVE-1", symbol="<img src=x onerror=pwned=1>",
                    side="buy", quantity="3", entry_price="100.10")  # fmt: skip
        closed = pub.publish("trade.closed", trade_id="LIVE-1", exit_price="100.20")
        assert wait_for_event(settings.db, closed, timeout_s=3)  # the commit, seen at +10 ms
        committed = time.monotonic()
        page.wait_for_function(
            """() => document.querySelector('#history tr[data-trade="bot-a/LIVE-1"]')
                && document.querySelector('.fig[data-period="all_time"] b').textContent
                   === '+80.30'""",
            timeout=3000,
        )
        shown = time.monotonic()
    assert page.evaluate("window.notReloaded") is True
    row = page.locator('#history tr[data-trade="bot-a/LIVE-1"]').inner_text()
    assert "<img src=x onerror=pwned=1>" in row
    assert "100.1" in row
    assert "+0.30" in row
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert page.locator("#history img").count() == 0
    body = page.inner_text("body")
    assert "bot-b" not in body
    assert "ACC-2" not in body
    latency = {"publish_to_screen_ms": round((shown - started) * 1000),
               "commit_to_screen_ms": round((shown - committed) * 1000)}  # fmt: skip
    (tmp_path / "latency.json").write_text(json.dumps(latency))
    print("latency", latency)
    assert shown - started < 3


def test_dashboard_on_demo_data_screenshot_light_and_phone_dark(
    browser: Browser, tmp_path: Path, serve_process: Any
) -> None:
    db = tmp_path / "demo" / "demo.db"
    done = tradescribe("demo", "--db", db, "--seconds", "3")
    assert done.returncode == 0, done.stderr
    tokens = tmp_path / "tokens.db"
    server: ServeProcess = serve_process(db, tokens)
    secret = token(tokens, "admin", admin=True)
    page = log_in(browser, server.url, secret, viewport={"width": 1280, "height": 900})
    for widget in ("widget-pnl", "widget-equity", "widget-daily-loss", "widget-bots",
                   "widget-open", "widget-history", "widget-calendar"):  # fmt: skip
        assert page.locator(f"#{widget}").bounding_box()["height"] > 40, widget  # type: ignore[index]
    assert page.locator("#equity-curve polyline").count() == 1
    assert page.locator("#equity-curve .zero").count() == 1
    labels = page.evaluate("[...document.querySelectorAll('#equity-curve text')]"
                           ".map(t => t.textContent)")  # fmt: skip
    assert not [t for t in labels if t.lstrip("-\u2212") == "0" and t != "0"], labels
    assert page.locator("#bots tr").count() == 1 + 3
    worst = page.locator("#loss-worst")
    if float(worst.inner_text().split()[0]) > 100:
        assert "over" in (worst.get_attribute("class") or "")
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    if os.environ.get("TRADESCRIBE_UPDATE_SCREENSHOT"):
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), clip={"x": 0, "y": 0, "width": 1280, "height": 1100})

    # the history's filters narrow the rows without a reload
    page.fill("#filters input[name=symbol]", "btc")
    page.click("#filters button[type=submit]")
    page.wait_for_function(
        """() => [...document.querySelectorAll('#history tr[data-trade]')].length > 0
            && [...document.querySelectorAll('#history tr[data-trade]')]
               .every(r => r.cells[4].textContent === 'BTCUSDT')"""
    )
    # the API's docs page is served from the package and lists every route
    page.goto(server.url + "/api/docs")
    page.wait_for_selector("#docs section.card")
    assert page.locator("#docs code", has_text="/api/v1/history").count() == 1
    assert page.locator("#docs code", has_text="/api/pnl-calendar").count() == 1

    phone = log_in(browser, server.url, secret, viewport={"width": 390, "height": 844},
                   color_scheme="dark", is_mobile=True)  # fmt: skip
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    background = phone.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(13, 17, 23)"
    phone.screenshot(path=str(tmp_path / "dashboard-phone-dark.png"), full_page=True)
