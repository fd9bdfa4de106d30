"""``csv``: any other bot's CSV, its columns mapped to contract fields by TOML.

A mapping file (``--mapping FILE``)::

    type = "trade"              # "trade" (opened, + closed when closed_at is set)
                                # or any event type, e.g. "daily_stats.updated"
    row_key = "ticket"          # column unique per row (default: the line number)
    time = "open_time"          # column holding the event time (trade: opened_at)
    delimiter = ","

    [columns]                   # CSV column = contract field
    ticket = "trade_id"
    pair = "symbol"
    dir = "side"
    size = "quantity"
    open = "entry_price"
    close = "exit_price"
    open_time = "opened_at"
    close_time = "closed_at"
    profit = "realized_pnl"

    [values.side]               # optional: rewrite a field's values
    B = "buy"
    S = "sell"

    [constants]                 # optional: fields every row gets
    strategy = "grid"

Columns not mapped are kept in the event's ``attributes``.
"""

from __future__ import annotations

import csv
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from contracts.events import AnyEvent
from contracts.vocabulary import EVENT_TYPES
from worker.importers.base import (
    EventMaker,
    ImportContext,
    Item,
    RecordError,
    Skip,
    attempt,
    csv_rows,
    optional_time,
    parse_time,
    text,
)

_TIME_FIELDS = {"opened_at", "closed_at", "emitted_at", "at"}
_TRADE_CLOSE = ("exit_price", "realized_pnl", "exit_reason", "closed_at", "fees", "commission")


@dataclass(frozen=True)
class Mapping:
    type: str
    columns: dict[str, str]
    row_key: str | None = None
    time: str | None = None
    delimiter: str = ","
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)


def load_mapping(path: Path | None) -> Mapping:
    if path is None:
        raise RecordError("the csv format needs a TOML file mapping its columns to fields")
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RecordError(f"mapping file {path} cannot be read: {exc}") from exc
    kind = doc.get("type", "trade")
    if kind != "trade" and kind not in EVENT_TYPES:
        raise RecordError(f"mapping file {path}: type {kind!r} is not 'trade' or an event type")
    columns = doc.get("columns")
    if not isinstance(columns, dict) or not columns:
        raise RecordError(f"mapping file {path} needs a [columns] table (csv column = field)")
    return Mapping(
        type=kind,
        columns={str(k): str(v) for k, v in columns.items()},
        row_key=doc.get("row_key"),
        time=doc.get("time"),
        delimiter=doc.get("delimiter", ","),
        values=doc.get("values", {}),
        constants=doc.get("constants", {}),
    )


def read(path: Path, ctx: ImportContext) -> Iterator[Item]:
    mapping = load_mapping(ctx.mapping)
    maker = EventMaker(ctx, path)
    with path.open(newline="", encoding="utf-8-sig") as fh:
        rows = csv.DictReader(fh, delimiter=mapping.delimiter)
        header = rows.fieldnames or []
        missing = [c for c in mapping.columns if c not in header]
        if missing:
            raise RecordError(f"{path} has no column {', '.join(missing)} named in the mapping")
        for item in csv_rows(rows, path):
            if isinstance(item, Skip):
                yield item
                continue
            line, row = item
            key = text(row.get(mapping.row_key)) if mapping.row_key else str(line)
            yield attempt(f"{path}:{line}", partial(_events, maker, mapping, row, key))


def _fields(mapping: Mapping, row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    data: dict[str, Any] = dict(mapping.constants)
    extras: dict[str, Any] = {}
    for column, value in row.items():
        if column is None:
            raise RecordError("row has more cells than the header")
        target = mapping.columns.get(column)
        if target is None:
            if text(value):
                extras[column] = value
            continue
        value = text(value)
        if value is not None and target in mapping.values:
            value = mapping.values[target].get(value, value)
        data[target] = value
    return data, extras


def _events(
    maker: EventMaker, mapping: Mapping, row: dict[str, Any], key: str | None
) -> list[AnyEvent]:
    if key is None:
        raise RecordError(f"row key column {mapping.row_key!r} is empty")
    tz = maker.ctx.tz
    data, extras = _fields(mapping, row)
    for name in _TIME_FIELDS & data.keys():
        data[name] = optional_time(data[name], tz, name)
    if extras:
        data["attributes"] = extras
    if mapping.time:
        when = parse_time(row.get(mapping.time), tz, mapping.time)
    elif data.get("opened_at"):
        when = data["opened_at"]
    else:
        raise RecordError("no event time: set 'time' in the mapping file")
    if mapping.type != "trade":
        return [maker.event(mapping.type, data, when, key)]
    closing = {k: data.pop(k) for k in _TRADE_CLOSE if k in data}
    events = [maker.event("trade.opened", data, when, key)]
    closed_at = closing.get("closed_at")
    if closed_at is not None:
        closing["trade_id"] = data.get("trade_id")
        events.append(maker.event("trade.closed", closing, closed_at, key))
    return events
