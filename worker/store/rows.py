"""Entity rows and how one change merges into them. Standard library only.

A :class:`Change` is one event's effect on one entity row, a named tuple, so
that the event loop can hand a batch of them to the write process cheaply; the
write process merges them into the rows it keeps (:mod:`worker.store.write`) without
importing pydantic or the event models.

Each field of a row remembers the version (event time, then event id) of the
event that last set it, and an event sets a field only if its version is
newer, so a row is the same whatever order its events arrive in.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any, NamedTuple

from contracts.vocabulary import TERMINAL_STATUSES
from worker.store.entities import ENTITIES, TRADES, Entity

ENTITY_BY_TABLE: dict[str, Entity] = {e.table: e for e in ENTITIES}
_TRADES = TRADES.table

Key = tuple[Any, ...]
Row = dict[str, Any]


class Change(NamedTuple):
    """One event's effect on one entity row."""

    table: str
    key: Key
    version: str  # "<utc ts>|<event id>": newer versions win, field by field
    ts: str  # the event's time, as utc_text
    fields: dict[str, Any]  # projection columns the event set
    attributes: dict[str, Any]  # everything else it sent
    defaults: dict[str, Any]  # tenancy it left implicit: set only if never set

    @property
    def event_id(self) -> str:
        return self.version.rpartition("|")[2]


def json_value(value: Any) -> Any:
    """A Python value as it is kept inside a JSON column (decimals stay exact)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


# Built once: json.dumps with options builds a new encoder on every call.
_ENCODE = json.JSONEncoder(
    separators=(",", ":"), default=json_value, ensure_ascii=False, sort_keys=True
).encode


def dumps(value: Any) -> str:
    return _ENCODE(value) if value else ("{}" if isinstance(value, dict) else _ENCODE(value))


def new_row(entity: Entity, key: Key, ts: str) -> Row:
    row: Row = dict.fromkeys(entity.columns)
    row.update(zip(entity.key, key, strict=True))
    row.update(created_at=ts, updated_at=ts, attributes={}, versions={})
    return row


def merge(row: Row, change: Change) -> None:
    """Apply one change to a row in place; commutative and idempotent."""
    table, _, version, ts, fields, attributes, defaults = change
    versions: dict[str, str] = row["versions"]
    get = versions.get
    for name, value in fields.items():
        if name == "status":  # a terminal status outranks any other
            field_version = ("1" if value in TERMINAL_STATUSES else "0") + version
        else:
            field_version = version
        if field_version > get(name, ""):
            row[name] = value
            versions[name] = field_version
    if attributes:
        kept: dict[str, Any] = row["attributes"]
        for name, value in attributes.items():
            slot = "attributes." + name
            if version > get(slot, ""):
                kept[name] = value
                versions[slot] = version
    for name, value in defaults.items():
        if name not in versions:
            row[name] = value
    if ts < row["created_at"]:
        row["created_at"] = ts
    if ts > row["updated_at"]:
        row["updated_at"] = ts
    if table == _TRADES:
        _derive_trade(row)


def _derive_trade(row: Row) -> None:
    """Fill realized P&L from prices when the bot did not send it."""
    if "realized_pnl" in row["versions"]:
        return
    entry, exit_, qty = row["entry_price"], row["exit_price"], row["quantity"]
    if row["status"] != "closed" or None in (entry, exit_, qty, row["side"]):
        row["realized_pnl"] = None
        return
    direction = 1 if row["side"] == "buy" else -1
    row["realized_pnl"] = (exit_ - entry) * qty * direction - (row["fees"] or 0.0)


def row_values(entity: Entity, row: Row) -> tuple[Any, ...]:
    """A merged row as the tuple an INSERT takes, JSON columns serialised."""
    values = [row[c] for c in entity.all_columns[:-2]]
    values.append(dumps(row["attributes"]))
    values.append(dumps(pack_versions(row["versions"])))
    return tuple(values)


def row_from_db(entity: Entity, values: tuple[Any, ...]) -> Row:
    row = dict(zip(entity.all_columns, values, strict=True))
    row["attributes"] = json.loads(row["attributes"])
    row["versions"] = unpack_versions(json.loads(row["versions"]))
    return row


def pack_versions(versions: dict[str, str]) -> dict[str, list[str]]:
    """``{field: version}`` stored as ``{version: [fields]}``.

    One event sets many fields of a row at one version, so a trade row holds a
    handful of distinct versions for twenty-odd fields: about a third of the
    text to write, parse and keep.
    """
    packed: dict[str, list[str]] = {}
    for name in sorted(versions):
        version = versions[name]
        names = packed.get(version)
        if names is None:
            packed[version] = [name]
        else:
            names.append(name)
    return packed


def unpack_versions(stored: dict[str, Any]) -> dict[str, str]:
    """The inverse of :func:`pack_versions`; also reads the older ``{field: version}``."""
    unpacked: dict[str, str] = {}
    for key, value in stored.items():
        if isinstance(value, list):
            unpacked.update(dict.fromkeys(value, key))
        else:
            unpacked[key] = value
    return unpacked


__all__ = [
    "ENTITY_BY_TABLE",
    "TERMINAL_STATUSES",
    "TRADES",
    "Change",
    "Key",
    "Row",
    "dumps",
    "json_value",
    "merge",
    "new_row",
    "pack_versions",
    "row_from_db",
    "row_values",
    "unpack_versions",
]
