"""``csv-trades``: the trade-tracking CSV of seed 001 (one row per tracked trade).

Columns: trade_id, symbol, entry_date, entry_price, stop_loss_price,
target_price, risk_reward_ratio, atr_at_entry, trade_type (LONG/SHORT),
source_signal_date, status (ACTIVE/OPEN/CLOSED), current_price,
unrealized_pnl, exit_date, exit_price, realized_pnl, exit_reason,
holding_period, notes, created_at, updated_at.

Each row becomes ``trade.opened`` at entry_date, plus ``trade.closed`` at
exit_date when it is closed. The file has no quantity column: an optional
``quantity`` column is used when present, otherwise 1 (marked
``quantity_assumed`` in the trade's attributes).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from contracts.events import AnyEvent
from worker.importers.base import (
    EventMaker,
    ImportContext,
    Item,
    RecordError,
    Skip,
    attempt,
    csv_rows,
    number,
    optional_time,
    parse_time,
    positive,
    text,
)

_STATUS = {"active": "open", "open": "open", "closed": "closed"}
REQUIRED = ("trade_id", "symbol", "entry_date", "entry_price", "status")


def read(path: Path, ctx: ImportContext) -> Iterator[Item]:
    maker = EventMaker(ctx, path)
    with path.open(newline="", encoding="utf-8-sig") as fh:
        rows = csv.DictReader(fh)
        missing = [c for c in REQUIRED if c not in (rows.fieldnames or [])]
        if missing:
            raise RecordError(
                f"{path} is not a seed-001 trades CSV: no column {', '.join(missing)}"
            )
        for item in csv_rows(rows, path):
            if isinstance(item, Skip):
                yield item
                continue
            line, row = item
            yield attempt(f"{path}:{line}", partial(_events, maker, row))


def _events(maker: EventMaker, row: dict[str, Any]) -> list[AnyEvent]:
    tz = maker.ctx.tz
    trade_id = text(row.get("trade_id"))
    if trade_id is None:
        raise RecordError("trade_id is empty")
    status = _STATUS.get((row.get("status") or "").strip().lower())
    if status is None:
        raise RecordError(f"status {row.get('status')!r} is not ACTIVE, OPEN or CLOSED")
    opened_at = parse_time(row.get("entry_date"), tz, "entry_date")
    quantity = number(row.get("quantity"))
    attributes: dict[str, Any] = {
        k: row[k]
        for k in ("source_signal_date", "holding_period", "created_at", "updated_at")
        if text(row.get(k))
    }
    if quantity is None:
        attributes["quantity_assumed"] = True
    opened = {
        "trade_id": trade_id,
        "symbol": row.get("symbol"),
        "side": row.get("trade_type"),
        "quantity": quantity or 1,
        "entry_price": number(row.get("entry_price")),
        "stop_loss": positive(row.get("stop_loss_price")),
        "take_profit": positive(row.get("target_price")),
        "risk_reward_ratio": number(row.get("risk_reward_ratio")),
        "atr_at_entry": number(row.get("atr_at_entry")),
        "trade_type": text(row.get("trade_type")),
        "current_price": positive(row.get("current_price")),
        "unrealized_pnl": number(row.get("unrealized_pnl")),
        "notes": text(row.get("notes")),
        "opened_at": opened_at,
        "attributes": attributes or None,
    }
    events = [maker.event("trade.opened", opened, opened_at, trade_id)]
    if status == "closed":
        closed_at = optional_time(row.get("exit_date"), tz, "exit_date")
        if closed_at is None:
            raise RecordError("status is CLOSED but exit_date is empty")
        closed = {
            "trade_id": trade_id,
            "exit_price": number(row.get("exit_price")),
            "realized_pnl": number(row.get("realized_pnl")),
            "exit_reason": text(row.get("exit_reason")),
            "closed_at": closed_at,
            "status": "closed",
        }
        events.append(maker.event("trade.closed", closed, closed_at, trade_id))
    return events
