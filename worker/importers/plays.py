"""``plays``: seed 000's play files (one JSON file per play; give files or folders).

A play: play_id, play_name, symbol, trade_type (CALL/PUT), strike_price,
expiration_date, contracts, status (new/open/closed/expired), play_class,
creation_date, option_contract_symbol, entry_point/take_profit/stop_loss
objects, strategy, creator, ``status_history`` (status, timestamp, order ids)
and ``trade_logs`` (datetime_open/close, premium_open/close, price_open/close,
close_type, close_condition, profit_loss, profit_loss_pct).

The play is one trade (trade_id = play_id, side buy: the play buys options):
``trade.opened`` at creation_date with status pending (a new play); each
status-history entry a ``trade.updated`` with the mapped status (new -> pending,
open -> open, closed -> closed, expired -> expired); each trade log a
``trade.updated`` with the fill at datetime_open and a ``trade.closed`` at
datetime_close.
"""

from __future__ import annotations

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
    load_json,
    number,
    optional_time,
    parse_time,
    positive,
    text,
)

STATUS = {"new": "pending", "open": "open", "closed": "closed", "expired": "expired"}
_OPTION = {"call": "call", "put": "put", "c": "call", "p": "put"}


def read(path: Path, ctx: ImportContext) -> Iterator[Item]:
    files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
    for file in files:
        maker = EventMaker(ctx, file)
        try:
            play = load_json(file)
        except JsonFileError as exc:
            yield Skip(exc.where, exc.reason)
            continue
        if not isinstance(play, dict):
            yield Skip(f"{file}:1", "a play file holds one JSON object")
            continue
        yield attempt(f"{file}:1", partial(_events, maker, play, file))


def _status(value: Any) -> str:
    if isinstance(value, dict):  # older files: {"play_status": "OPEN", ...}
        value = value.get("play_status")
    status = STATUS.get((text(value) or "").lower())
    if status is None:
        raise RecordError(f"status {value!r} is not new, open, closed or expired")
    return status


def _events(maker: EventMaker, play: dict[str, Any], file: Path) -> list[AnyEvent]:
    tz = maker.ctx.tz
    trade_id = text(play.get("play_id")) or file.stem
    final = _status(play.get("status"))
    created = parse_time(play.get("creation_date"), tz, "creation_date")
    entry = play.get("entry_point") or {}
    option = _OPTION.get((text(play.get("trade_type")) or "").lower())
    if option is None:
        raise RecordError(f"trade_type {play.get('trade_type')!r} is not CALL or PUT")
    expiration = parse_time(play.get("expiration_date"), tz, "expiration_date").date()
    opened = {
        "trade_id": trade_id,
        "symbol": play.get("symbol"),
        "side": "buy",
        "quantity": play.get("contracts"),
        "contracts": play.get("contracts"),
        "entry_price": positive(entry.get("entry_premium")) or positive(entry.get("stock_price")),
        "option_symbol": text(play.get("option_contract_symbol")),
        "option_type": option,
        "strike_price": number(play.get("strike_price")),
        "expiration_date": expiration,
        "strategy": text(play.get("strategy")),
        "trade_type": text(play.get("play_class")),
        "status": "pending",
        "opened_at": created,
        "attributes": _attributes(play),
    }
    events = [maker.event("trade.opened", opened, created, trade_id)]
    for index, change in enumerate(play.get("status_history") or []):
        at = parse_time(change.get("timestamp"), tz, f"status_history[{index}].timestamp")
        update: dict[str, Any] = {"trade_id": trade_id, "status": _status(change.get("status"))}
        if text(change.get("order_id")):
            update["order_id"] = text(change.get("order_id"))
        events.append(maker.event("trade.updated", update, at, trade_id, f"history:{index}"))
    for index, log in enumerate(play.get("trade_logs") or []):
        events.extend(_trade_log(maker, trade_id, index, log))
    if final in {"closed", "expired"} and not play.get("status_history"):
        # Only the final status is known: record it at the last thing the play tells.
        update = {"trade_id": trade_id, "status": final}
        events.append(maker.event("trade.updated", update, events[-1].ts, trade_id, "final"))
    return events


def _trade_log(maker: EventMaker, trade_id: str, index: int, log: dict[str, Any]) -> list[AnyEvent]:
    tz = maker.ctx.tz
    events: list[AnyEvent] = []
    opened = optional_time(log.get("datetime_open"), tz, f"trade_logs[{index}].datetime_open")
    if opened is not None:
        fill = {
            "trade_id": trade_id,
            "entry_price": positive(log.get("premium_open")),
            "premium": number(log.get("premium_open")),
            "status": "open",
            "opened_at": opened,
            "attributes": _pick(log, "price_open", "delta_open", "theta_open", "trade_id"),
        }
        events.append(maker.event("trade.updated", fill, opened, trade_id, f"log:{index}"))
    closed = optional_time(log.get("datetime_close"), tz, f"trade_logs[{index}].datetime_close")
    if closed is not None:
        close = {
            "trade_id": trade_id,
            "exit_price": number(log.get("premium_close")),
            "realized_pnl": number(log.get("profit_loss")),
            "exit_reason": text(log.get("close_type")),
            "closed_at": closed,
            "attributes": _pick(log, "price_close", "close_condition", "profit_loss_pct"),
        }
        events.append(maker.event("trade.closed", close, closed, trade_id, f"log:{index}"))
    return events


def _pick(source: dict[str, Any], *names: str) -> dict[str, Any] | None:
    picked = {n: source[n] for n in names if source.get(n) is not None}
    return picked or None


def _attributes(play: dict[str, Any]) -> dict[str, Any] | None:
    return _pick(play, "play_name", "creator", "take_profit", "stop_loss", "entry_point")
