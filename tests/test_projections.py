"""Projections converge whatever order a trade's events arrive in."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import AsyncPublisher, build_event
from contracts.events import AnyEvent
from tests.helpers import count, make_settings, query, running_worker, wait_for
from worker.settings import Settings
from worker.store.projections import TRADES, project
from worker.store.rows import merge, new_row, row_from_db, row_values

T0 = dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.UTC)


def trade_event(kind: str, minute: int, source: str = "bot-a", **data: Any) -> AnyEvent:
    return build_event(
        f"trade.{kind}",
        {"trade_id": "T1", **data},
        source=source,
        ts=T0 + dt.timedelta(minutes=minute),
    )


def fold(events: list[AnyEvent]) -> dict[str, Any]:
    """The trade row after applying events in the given order."""
    rows: dict[Any, dict[str, Any]] = {}
    for event in events:
        for change in project([event]).changes:
            _, key, _, ts, *_ = change
            row = rows.setdefault(key, new_row(TRADES, key, ts))
            merge(row, change)
    (row,) = rows.values()
    return row


OPENED = trade_event("opened", 0, symbol="BTCUSDT", side="buy", quantity="2", entry_price="100")
UPDATE_1 = trade_event("updated", 1, stop_loss="95", current_price="101")
UPDATE_2 = trade_event("updated", 2, stop_loss="99", current_price="104")
CLOSED = trade_event("closed", 3, exit_price="110", exit_reason="take_profit")


def test_closed_before_opened_converges_to_the_same_row() -> None:
    in_order = fold([OPENED, CLOSED])
    reversed_ = fold([CLOSED, OPENED])
    assert in_order == reversed_
    assert in_order["status"] == "closed"
    assert in_order["realized_pnl"] == 20.0  # (110 - 100) * 2, derived when not sent


def test_a_stored_row_reads_back_the_same_in_the_packed_and_the_older_versions_text() -> None:
    row = fold([OPENED, UPDATE_1, CLOSED])
    stored = row_values(TRADES, row)
    assert row_from_db(TRADES, stored) == row
    versions = TRADES.all_columns.index("versions")
    assert len(stored[versions]) < len(json.dumps(row["versions"])) / 2
    older = (*stored[:versions], json.dumps(row["versions"]))  # the older {field: version}
    assert row_from_db(TRADES, older) == row


def test_stale_update_does_not_overwrite_a_newer_one() -> None:
    row = fold([OPENED, UPDATE_2, UPDATE_1])
    assert row["stop_loss"] == 99.0
    assert row["current_price"] == 104.0


def test_late_update_cannot_reopen_a_closed_trade() -> None:
    late = trade_event("updated", 9, status="open", notes="after close")
    row = fold([OPENED, CLOSED, late])
    assert row["status"] == "closed"
    assert row["notes"] == "after close"


def test_unknown_fields_are_kept_in_attributes() -> None:
    event = trade_event(
        "opened", 0, symbol="EURUSD", side="sell", quantity="1", entry_price="1.08",
        chain_id="C-7", sl_multiplier="1.5",
    )  # fmt: skip
    row = fold([event])
    assert row["attributes"] == {"chain_id": "C-7", "sl_multiplier": "1.5"}


@settings(max_examples=200, deadline=None)
@given(st.permutations([OPENED, UPDATE_1, UPDATE_2, CLOSED, UPDATE_2, OPENED]))
def test_any_order_and_any_duplicates_give_the_same_row(events: list[AnyEvent]) -> None:
    assert fold(events) == fold([OPENED, UPDATE_1, UPDATE_2, CLOSED])


async def test_worker_converges_for_both_arrival_orders(
    tmp_path: Path, redis_url: str, names: dict[str, str]
) -> None:
    rows = []
    for order, events in (("forward", [OPENED, CLOSED]), ("reverse", [CLOSED, OPENED])):
        s = make_settings(tmp_path / f"{order}.db", redis_url, {**names, "group": order})
        stream = f"{names['stream']}:{order}"
        s = s.model_copy(update={"stream": stream})
        async with running_worker(s):
            async with AsyncPublisher(redis_url, source="bot-a", stream=stream) as pub:
                for event in events:
                    await pub.send(event)
            await wait_for(lambda s=s: count(s.db, "events") == 2)
        rows.append(query(s.db, "SELECT * FROM trades"))
    assert rows[0] == rows[1]
    (trade,) = rows[0]
    assert "closed" in trade
    assert 20.0 in trade


def test_exact_decimals_survive_into_the_event_body() -> None:
    event = trade_event(
        "opened", 0, symbol="X", side="buy", quantity="0.12345678901234567890123",
        entry_price="12345.000000000000000001",
    )  # fmt: skip
    assert event.data.quantity == Decimal("0.12345678901234567890123")
    from contracts import to_wire

    assert '"quantity":"0.12345678901234567890123"' in to_wire(event)


async def test_close_without_tenancy_keeps_the_plugin_of_the_open(settings: Settings) -> None:
    async with running_worker(settings):
        async with AsyncPublisher(settings.redis_url, source="b", stream=settings.stream) as pub:
            opened = {"trade_id": "P1", "symbol": "X", "side": "buy", "quantity": 1,
                      "entry_price": 10}  # fmt: skip
            await pub.publish("trade.opened", opened, plugin_id="v3-logic-01-5min", mode="paper")
            await pub.publish("trade.closed", trade_id="P1", exit_price=11)
        await wait_for(lambda: count(settings.db, "events") == 2)
    rows = query(settings.db, "SELECT plugin_id, mode, account, status FROM trades")
    assert rows == [("v3-logic-01-5min", "paper", "default", "closed")]


def test_the_write_process_starts_without_importing_pydantic() -> None:
    import subprocess
    import sys

    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, worker.store.writer; print(sorted(sys.modules))"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "'pydantic'" not in loaded
    assert "'contracts.events'" not in loaded
