"""``pnl-json``: seed 002's ``pnl_data/daily_pnl.json`` and ``daily_pnl.csv``.

A JSON file is ``{"records": [...]}`` (or a bare list) of daily records:
``date``, ``non_equity_pnl``, ``equity_pnl``, ``total_pnl``, ``positions_count``
and ``positions`` (Kite positions: tradingsymbol, exchange, instrument_token,
quantity, average_price, last_price, pnl, unrealised, realised). The CSV holds
the same daily columns without positions.

As seed 002's ``migrate_json_to_database.py`` suggests, each day becomes one
``daily_stats.updated`` (total_realized_pnl = non_equity_pnl, number_of_trades =
positions_count) and each position one ``position.updated`` (the end-of-day
snapshot) plus, for a non-flat position, a ``trade.opened``/``trade.closed``
pair at that day's close (entry = average_price, exit = last_price, pnl).
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from contracts.events import AnyEvent
from worker.importers.base import (
    EventMaker,
    ImportContext,
    Item,
    JsonFileError,
    RecordError,
    Skip,
    attempt,
    csv_rows,
    load_json,
    number,
    parse_time,
    positive,
    text,
)

_DAY_END = dt.time(15, 30)  # NSE close: the time a day's snapshot describes


def read(path: Path, ctx: ImportContext) -> Iterator[Item]:
    maker = EventMaker(ctx, path)
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = csv.DictReader(fh)
            if "date" not in (rows.fieldnames or []):
                raise RecordError(f"{path} is not a daily_pnl.csv: no 'date' column")
            for item in csv_rows(rows, path):
                if isinstance(item, Skip):
                    yield item
                    continue
                line, row = item
                yield attempt(f"{path}:{line}", partial(_day, maker, row, with_positions=False))
        return
    try:
        document = load_json(path)
    except JsonFileError as exc:
        yield Skip(exc.where, exc.reason)
        return
    records = document.get("records") if isinstance(document, dict) else document
    if not isinstance(records, list):
        raise RecordError(f"{path} is not a daily_pnl.json: no 'records' list")
    for index, record in enumerate(records):
        where = f"{path}:records[{index}]"
        if not isinstance(record, dict):
            yield attempt(where, partial(_not_an_object, record))
            continue
        yield attempt(where, partial(_day, maker, record, with_positions=True))


def _not_an_object(record: Any) -> list[AnyEvent]:
    raise RecordError(f"record is {type(record).__name__}, not an object")


def _day(maker: EventMaker, record: dict[str, Any], *, with_positions: bool) -> list[AnyEvent]:
    day = parse_time(record.get("date"), maker.ctx.tz, "date").date()
    at = dt.datetime.combine(day, _DAY_END, maker.ctx.tz)
    extras = {
        k: record[k] for k in ("equity_pnl", "total_pnl", "timestamp") if record.get(k) is not None
    }
    stats = {
        "date": day,
        "total_realized_pnl": number(record.get("non_equity_pnl")),
        "total_unrealized_pnl": number(record.get("unrealized_pnl")),
        "number_of_trades": int(number(record.get("positions_count")) or 0),
        "attributes": extras or None,
    }
    events = [maker.event("daily_stats.updated", stats, at, str(day))]
    positions = (record.get("positions") or []) if with_positions else []
    if not isinstance(positions, list):
        raise RecordError("positions is not a list")
    for index, pos in enumerate(positions):
        if not isinstance(pos, dict):
            raise RecordError(f"positions[{index}] is not an object")
        events.extend(_position(maker, day, at, index, pos))
    return events


def _position(
    maker: EventMaker, day: dt.date, at: dt.datetime, index: int, pos: dict[str, Any]
) -> list[AnyEvent]:
    symbol = text(pos.get("tradingsymbol"))
    if symbol is None:
        raise RecordError(f"positions[{index}].tradingsymbol is empty")
    quantity = number(pos.get("quantity")) or 0
    key = f"{day}:{index}:{symbol}"
    snapshot = {
        "symbol": symbol,
        "position_id": symbol,
        "quantity": quantity,
        "entry_price": positive(pos.get("average_price")),
        "current_price": positive(pos.get("last_price")),
        "unrealized_pnl": number(pos.get("unrealised")),
        "realized_pnl": number(pos.get("pnl")),
        "exchange": text(pos.get("exchange")),
        "instrument_token": text(pos.get("instrument_token")),
        "lot_size": positive(pos.get("lot_size")),
    }
    events = [maker.event("position.updated", snapshot, at, key)]
    if quantity == 0:
        return events  # flat at the close: the pnl is on the position, there is no open size
    trade = {
        "trade_id": f"{day}:{symbol}",
        "symbol": symbol,
        "side": "buy" if quantity > 0 else "sell",
        "quantity": abs(quantity),
        "entry_price": positive(pos.get("average_price")),
        "exchange": text(pos.get("exchange")),
        "instrument_token": text(pos.get("instrument_token")),
        "opened_at": at,
    }
    closed = {
        "trade_id": trade["trade_id"],
        "exit_price": positive(pos.get("last_price")),
        "realized_pnl": number(pos.get("pnl")),
        "exit_reason": "manual",
        "closed_at": at,
    }
    events.append(maker.event("trade.opened", trade, at, key))
    events.append(maker.event("trade.closed", closed, at, key))
    return events
