"""``sqlite-legacy``: an old ``trading_bot.db`` like seed 004's.

The ``trades`` table becomes ``trade.opened`` at open_time (plus
``trade.closed`` at close_time when status is closed). ``plugin_id`` comes from
``logic_type`` through seed 004's own table (``LOGIC_TO_PLUGIN``); a TOML file
given with ``--mapping`` overrides or extends it::

    [logic_type]
    combinedlogic-1 = "v3-logic-01-5min"
    my-old-logic = "my-plugin"
    default = "legacy"          # for empty or unknown logic_type

Every row of every other table (reentry_chains, sl_events, tp_reentry_events,
reversal_exit_events, system_state, profit_booking_*, trading_sessions, ...) is
kept as an ``audit.event`` with action ``legacy.<table>`` and the row as its
details, at the row's first time column (or the file's modification time).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import tomllib
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
    attempt,
    number,
    optional_time,
    parse_time,
    positive,
    text,
)

# Seed 004, add_plugin_id.py: migrate_existing_data()
LOGIC_TO_PLUGIN = {
    "combinedlogic-1": "v3-logic-01-5min",
    "combinedlogic-2": "v3-logic-02-15min",
    "combinedlogic-3": "v3-logic-03-1h",
    "LOGIC1": "v3-logic-01-5min",
    "LOGIC2": "v3-logic-02-15min",
    "LOGIC3": "v3-logic-03-1h",
}
_TIME_COLUMNS = (
    "timestamp",
    "event_time",
    "created_at",
    "start_time",
    "open_time",
    "time",
    "updated_at",
)
_TRADE_COLUMNS = {
    "trade_id", "symbol", "entry_price", "exit_price", "sl_price", "tp_price", "lot_size",
    "direction", "strategy", "pnl", "commission", "swap", "comment", "status", "open_time",
    "close_time", "chain_id", "chain_level", "is_re_entry", "session_id", "logic_type", "id",
}  # fmt: skip


def load_mapping(path: Path | None) -> tuple[dict[str, str], str]:
    """Seed 004's logic_type table, overridden by the TOML file; and the default."""
    table = dict(LOGIC_TO_PLUGIN)
    default = "legacy"
    if path is None:
        return table, default
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RecordError(f"mapping file {path} cannot be read: {exc}") from exc
    section = doc.get("logic_type")
    if not isinstance(section, dict) or not all(isinstance(v, str) for v in section.values()):
        raise RecordError(f"mapping file {path} needs a [logic_type] table of strings")
    default = section.pop("default", default)
    table.update(section)
    return table, default


def read(path: Path, ctx: ImportContext) -> Iterator[Item]:
    if not path.is_file():
        raise RecordError(f"{path} does not exist")
    mapping, default = load_mapping(ctx.mapping)
    maker = EventMaker(ctx, path)
    mtime = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        try:
            tables = [
                r[0]
                for r in con.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%' ORDER BY name"
                )
            ]
        except sqlite3.DatabaseError as exc:
            raise RecordError(f"{path} is not an SQLite database: {exc}") from exc
        if "trades" not in tables:
            raise RecordError(f"{path} has no trades table; is it a seed-004 trading_bot.db?")
        for row in con.execute("SELECT rowid AS _rowid, * FROM trades ORDER BY rowid"):
            where = f"{path}:trades#{row['_rowid']}"
            yield attempt(where, partial(_trade, maker, dict(row), mapping, default))
        for table in tables:
            if table == "trades":
                continue
            for row in con.execute(f'SELECT rowid AS _rowid, * FROM "{table}" ORDER BY rowid'):
                where = f"{path}:{table}#{row['_rowid']}"
                yield attempt(where, partial(_other, maker, table, dict(row), mtime))
    finally:
        con.close()


def _trade(
    maker: EventMaker, row: dict[str, Any], mapping: dict[str, str], default: str
) -> list[AnyEvent]:
    tz = maker.ctx.tz
    trade_id = text(row.get("trade_id")) or str(row["_rowid"])
    logic = text(row.get("logic_type"))
    stored = text(row.get("plugin_id"))  # set when seed 004's migration already ran
    plugin = stored if stored and stored != "legacy" else mapping.get(logic or "", default)
    status = (text(row.get("status")) or "").lower()
    if status not in {"open", "closed"}:
        raise RecordError(f"status {row.get('status')!r} is neither open nor closed")
    opened_at = parse_time(row.get("open_time"), tz, "open_time")
    extras = {k: v for k, v in row.items() if k not in _TRADE_COLUMNS and not k.startswith("_")}
    opened = {
        "trade_id": trade_id,
        "symbol": row.get("symbol"),
        "side": row.get("direction"),
        "quantity": number(row.get("lot_size")),
        "lot_size": positive(row.get("lot_size")),
        "entry_price": number(row.get("entry_price")),
        "stop_loss": positive(row.get("sl_price")),
        "take_profit": positive(row.get("tp_price")),
        "strategy": text(row.get("strategy")),
        "notes": text(row.get("comment")),
        "chain_id": text(row.get("chain_id")),
        "chain_level": row.get("chain_level"),
        "is_re_entry": None if row.get("is_re_entry") is None else bool(row["is_re_entry"]),
        "session_id": text(row.get("session_id")),
        "logic_type": logic,
        "opened_at": opened_at,
        "attributes": {k: v for k, v in extras.items() if v is not None} or None,
    }
    key = f"trades:{row['_rowid']}"
    events = [maker.event("trade.opened", opened, opened_at, key, plugin_id=plugin)]
    if status == "closed":
        closed_at = optional_time(row.get("close_time"), tz, "close_time")
        if closed_at is None:
            raise RecordError("status is closed but close_time is empty")
        closed = {
            "trade_id": trade_id,
            "exit_price": number(row.get("exit_price")),
            "realized_pnl": number(row.get("pnl")),
            "commission": number(row.get("commission")),
            "swap": number(row.get("swap")),
            "closed_at": closed_at,
        }
        events.append(maker.event("trade.closed", closed, closed_at, key, plugin_id=plugin))
    return events


def _other(
    maker: EventMaker, table: str, row: dict[str, Any], mtime: dt.datetime
) -> list[AnyEvent]:
    rowid = row.pop("_rowid")
    when = mtime
    for column in _TIME_COLUMNS:
        if text(row.get(column)):
            when = parse_time(row[column], maker.ctx.tz, f"{table}.{column}")
            break
    details = {k: v if not isinstance(v, bytes) else v.hex() for k, v in row.items()}
    plugin = text(row.get("plugin_id")) or maker.ctx.plugin_id
    audit = {"action": f"legacy.{table}", "component": table, "details": details}
    return [maker.event("audit.event", audit, when, f"{table}:{rowid}", plugin_id=plugin)]
