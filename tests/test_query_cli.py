"""``tradescribe query`` and ``tradescribe report`` as a person or a script runs them."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import stat
import subprocess
from functools import partial
from pathlib import Path

import pytest

from contracts import build_event, to_wire
from tests.helpers import make_db, query, tradescribe
from tests.querydata import NOW
from worker.entries import decode
from worker.report import WIDGETS, gather, render
from worker.store.sqlite import SqliteStore

# A 200-column terminal, so a table row is one line; the suite's channel key, as a
# deployment's shell has it.
wide_tradescribe = partial(tradescribe, columns=200, channel_key=True)
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]  # fmt: skip


async def test_query_prints_a_table_json_and_csv(history_db: Path) -> None:
    table = wide_tradescribe("query", "active-trades", "--db", history_db, "--source", "bot-a")
    assert table.returncode == 0, table.stderr
    assert re.search(r"│ T1 .*│ BTCUSDT .*│ open ", table.stdout)

    as_json = wide_tradescribe("query", "history", "--db", history_db, "--symbol", "btc", "--json")
    result = json.loads(as_json.stdout)
    assert [r["trade_id"] for r in result["rows"]] == ["T2", "T1"]
    assert result["summary"]["net"] == 15.0

    as_csv = wide_tradescribe("query", "plugins", "--db", history_db, "--csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(r["plugin_id"], r["count"]) for r in rows] == [("p2", "1"), ("p1", "3")]


async def test_query_json_and_csv_print_a_derived_pnl_without_float_noise(tmp_path: Path) -> None:
    """A P&L the worker derives from prices holds binary noise as a REAL; ``--json`` and
    ``--csv`` print it as serve answers it, rounded to ten decimals."""
    db = tmp_path / "pnl.db"
    await make_db(db)
    trade = {"trade_id": "T9", "symbol": "ETHUSDT", "side": "buy", "quantity": "9"}
    events = [
        build_event("trade.opened", {**trade, "entry_price": "2417.19483"}, source="bot-n"),
        build_event("trade.closed", {"trade_id": "T9", "exit_price": "2396.33753"}, source="bot-n"),
    ]
    entries = [(f"{i + 1}-0", {b"event": to_wire(e).encode()}) for i, e in enumerate(events)]
    good, dead, _ = decode(entries, {}, 1 << 20)
    store = await SqliteStore.open(db)
    try:
        store.start_writer()
        assert await store.commit(good, dead) == (2, 0)
    finally:
        await store.close()
    assert query(db, "SELECT realized_pnl FROM trades") == [(-187.7157000000011,)]  # stored

    as_json = wide_tradescribe("query", "history", "--db", db, "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["rows"][0]["realized_pnl"] == -187.7157
    as_csv = wide_tradescribe("query", "history", "--db", db, "--csv")
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [r["realized_pnl"] for r in rows] == ["-187.7157"]


async def test_trade_query_shows_history_and_events_tables(history_db: Path) -> None:
    out = wide_tradescribe(
        "query", "trade", "--db", history_db, "--trade-id", "T2", "--source", "bot-a"
    )
    assert out.returncode == 0, out.stderr
    assert "status history" in out.stdout
    assert "events" in out.stdout
    assert "trade.closed" in out.stdout
    assert "journal.entry" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["query", "pnl", "--symbol", "BTC"], "error: query 'pnl' does not take --symbol; it"),
        (["query", "nope"], "error: unknown query 'nope'; choose one of: active-trades"),
        (["query", "history", "--since", "last-week"], "since: Input should be a valid date"),
        (["query", "pnl", "--tz", "Mars/Base"], "unknown time zone 'Mars/Base'"),
    ],
)
async def test_wrong_query_input_is_one_clear_line(
    history_db: Path, args: list[str], message: str
) -> None:
    out = wide_tradescribe(*args, "--db", history_db)
    assert out.returncode == 1
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_database_is_one_clear_line(tmp_path: Path) -> None:
    out = wide_tradescribe("query", "pnl", "--db", tmp_path / "nope.db")
    assert out.returncode == 1
    assert "nope.db does not exist; pass the worker's file with --db" in out.stderr


def find_browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    return None


async def test_report_is_one_offline_file_with_the_four_widgets(
    history_db: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    done = wide_tradescribe("report", "--db", history_db, "--out", out)
    assert done.returncode == 0, done.stderr
    page = out.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "external resource"
    assert "@import" not in page
    assert "url(" not in page
    for widget in WIDGETS:
        assert f'id="{widget}"' in page
    assert "<polyline" in page
    assert page.count('class="day"') >= 365


async def test_report_is_readable_by_its_owner_only_like_the_database(
    history_db: Path, tmp_path: Path
) -> None:
    fresh, earlier = tmp_path / "fresh.html", tmp_path / "earlier.html"
    earlier.write_text("an older report")
    earlier.chmod(0o644)
    previous = os.umask(0o022)
    try:
        for out in (fresh, earlier):
            done = wide_tradescribe("report", "--db", history_db, "--out", out)
            assert done.returncode == 0, done.stderr
    finally:
        os.umask(previous)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    assert stat.S_IMODE(earlier.stat().st_mode) == 0o600
    assert 'id="widget-pnl"' in earlier.read_text()


async def test_report_shows_the_numbers_of_the_queries(history_db: Path) -> None:
    page = render(gather(history_db, {"tz": "Europe/Berlin"}, now=NOW), {"tz": "Europe/Berlin"})
    assert "1,250.00 / 5,000.00" in page
    assert "25.0% used" in page
    assert "+75.00</span></b><span>All time · 4 trades" in page
    assert "+20.00</span></b><span>Today · 1 trades" in page
    assert "profit factor <b>2.67</b>" in page
    assert "2026-11-18: +20.00 (1 trades)" in page


async def test_report_renders_in_headless_chromium(history_db: Path, tmp_path: Path) -> None:
    browser = find_browser()
    if browser is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install -y chromium)")
    out = tmp_path / "report.html"
    assert wide_tradescribe("report", "--db", history_db, "--out", out).returncode == 0
    shot = tmp_path / "report.png"
    profile = tmp_path / "profile"
    flags = [*BROWSER_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=2000"]
    dom = subprocess.run([browser, *flags, "--dump-dom", out.as_uri()],
                         capture_output=True, text=True, timeout=90)  # fmt: skip
    assert f'data-rendered="{len(WIDGETS)}/{len(WIDGETS)}"' in dom.stdout, dom.stderr[-2000:]
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1280,1400",
                    out.as_uri()], capture_output=True, timeout=90)  # fmt: skip
    assert shot.stat().st_size > 10_000
