"""From events to projection rows, order-independently.

Trades, signals, positions and daily stats are *entities*: rows that many events
update. Each field of an entity row remembers the version (event time, then
event id) of the event that last set it, and an event sets a field only if its
version is newer. The row is therefore the same whatever order its events
arrive in, and a stale update never overwrites a newer one. A terminal status
(closed, cancelled, expired) outranks any non-terminal one, so a late
``trade.updated`` cannot reopen a closed trade.

Journal entries, audit events and status changes are *append-only* rows keyed
by the event id, so a redelivered event adds nothing.

Everything here is pure: no I/O, easy to test and to rebuild from the log.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from contracts.events import (
    AnyEvent,
    AuditEventEvent,
    DailyStatsUpdatedEvent,
    JournalEntryEvent,
    Payload,
    PositionUpdatedEvent,
)
from contracts.vocabulary import TENANCY, TERMINAL_STATUSES
from worker.store.entities import (
    AUDIT_COLUMNS,
    DAILY_STATS,
    ENTITIES,
    JOURNAL_COLUMNS,
    POSITIONS,
    SIGNALS,
    STATUS_HISTORY_COLUMNS,
    TRADES,
    Entity,
)
from worker.store.rows import Change, as_change, dumps, json_value

# Re-exported: the store, the bench and the tests import the entities from here.
__all__ = [
    "AUDIT_COLUMNS",
    "DAILY_STATS",
    "ENTITIES",
    "JOURNAL_COLUMNS",
    "POSITIONS",
    "SIGNALS",
    "STATUS_HISTORY_COLUMNS",
    "TENANCY",
    "TRADES",
    "Change",
    "Entity",
    "FastEvent",
    "Projected",
    "column_value",
    "dumps",
    "event_version",
    "json_value",
    "project",
    "utc_text",
]

_POSITION_SKIP = frozenset({"position_id"})
_DATE_SKIP = frozenset({"date"})


_ZERO = dt.timedelta(0)


def utc_text(moment: dt.datetime) -> str:
    """Fixed-width UTC text (``2026-11-22T10:00:00.000000Z``): string order is time order."""
    if moment.utcoffset() != _ZERO:
        moment = moment.astimezone(dt.UTC)
    return moment.isoformat(timespec="microseconds")[:26] + "Z"


def _column_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dt.datetime):
        return utc_text(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bool):
        return int(value)
    return value


_TO_COLUMN: dict[type, Any] = {
    Decimal: float,
    dt.datetime: utc_text,
    dt.date: dt.date.isoformat,
    bool: int,
    str: None,
    int: None,
    float: None,
    type(None): None,
}


def column_value(value: Any) -> Any:
    """A Python value as SQLite should hold it in a projection column (the common
    types by one dict lookup instead of four isinstance checks)."""
    kind = type(value)
    if kind in _TO_COLUMN:
        convert = _TO_COLUMN[kind]
        return value if convert is None else convert(value)
    return _column_value(value)


class FastEvent:
    """An event :mod:`worker.fastdecode` proved valid, its data already split as
    :func:`_split` splits a pydantic event's: set fields as projection columns and as
    attributes, the key fields apart (``keys``: trade_id, signal_id, position_id, date,
    and a position's symbol and quantity). ``given``: the tenancy fields it named."""

    __slots__ = ("account", "attributes", "columns", "given", "id", "keys", "mode",
                 "plugin_id", "source", "subject", "ts", "type")  # fmt: skip

    def __init__(
        self,
        id: str,
        type: str,
        source: str,
        ts: dt.datetime,
        tenancy: tuple[str, str, str],  # account, plugin_id, mode
        given: frozenset[str],
        split: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],  # columns, attributes, keys
        subject: str | None,
    ) -> None:
        self.id = id
        self.type = type
        self.source = source
        self.ts = ts
        self.account, self.plugin_id, self.mode = tenancy
        self.given = given
        self.columns, self.attributes, self.keys = split
        self.subject = subject


AnyDecoded = AnyEvent | FastEvent


@dataclass(slots=True)
class Projected:
    """Everything one batch of events does to the projections."""

    changes: list[Change] = field(default_factory=list)
    status_history: list[tuple[Any, ...]] = field(default_factory=list)
    journal: list[tuple[Any, ...]] = field(default_factory=list)
    audit: list[tuple[Any, ...]] = field(default_factory=list)


def event_version(event: AnyDecoded, ts: str | None = None) -> str:
    return f"{ts or utc_text(event.ts)}|{event.id}"


def _split(
    payload: Payload, entity: Entity, skip: Container[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fields the sender set, as (projection columns, everything else)."""
    columns: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    in_columns = entity.column_set
    # The declared fields' values (getattr() would go through __getattr__ for extras).
    values = vars(payload)
    extra = payload.model_extra or {}
    for name in payload.model_fields_set:
        if name in skip or name == "attributes":
            continue
        value = values[name] if name in values else extra[name]
        if name in in_columns:
            columns[name] = column_value(value)
        else:
            attributes[name] = json_value(value)
    if values.get("attributes") or extra:
        attributes.update({k: json_value(v) for k, v in payload.extras().items()})
    return columns, attributes


def _tenancy(event: AnyDecoded) -> tuple[dict[str, Any], dict[str, Any]]:
    """Tenancy the sender named explicitly, and the defaults it left implicit."""
    if isinstance(event, FastEvent):
        given: Container[str] = event.given
        values: dict[str, Any] = {
            "account": event.account,
            "plugin_id": event.plugin_id,
            "mode": event.mode,
        }
        if len(event.given) == len(TENANCY):  # the common case: all named
            return values, {}
    else:
        given = event.model_fields_set
        values = vars(event)
    explicit: dict[str, Any] = {}
    implicit: dict[str, Any] = {}
    for name in TENANCY:
        (explicit if name in given else implicit)[name] = values[name]
    return explicit, implicit


def _fast_change(event: FastEvent, version: str, ts: str, out: Projected) -> None:
    """What :func:`project` does for a pydantic event, from a proven one's split."""
    lifecycle = _LIFECYCLES.get(event.type.split(".", 1)[0])
    columns, attributes, keys = event.columns, event.attributes, event.keys
    if lifecycle is not None:
        item_id = keys[lifecycle.id_field]
        _lifecycle_rows(event, version, ts, out, lifecycle, columns, attributes, item_id)
    elif event.type == "position.updated":
        columns["plugin_id"] = event.plugin_id
        if "is_active" not in columns:
            columns["is_active"] = int(keys["quantity"] != 0)
        pos_key = (event.account, event.source, event.mode,
                   keys.get("position_id") or keys["symbol"])  # fmt: skip
        out.changes.append(
            as_change((POSITIONS.table, pos_key, version, ts, columns, attributes, {}))
        )
    else:  # daily_stats.updated: the fast path proves no other type
        key = (event.account, event.source, event.plugin_id, event.mode, str(keys["date"]))
        out.changes.append(
            as_change((DAILY_STATS.table, key, version, ts, columns, attributes, {}))
        )


def project(events: Iterable[AnyDecoded], ts_texts: Iterable[str] | None = None) -> Projected:
    """What a batch of validated events does to the projections (``ts_texts``: each
    event's ``utc_text(ts)``, when the caller has them already)."""
    out = Projected()
    texts = iter(ts_texts) if ts_texts is not None else None
    for event in events:
        ts = next(texts) if texts is not None else utc_text(event.ts)
        version = event_version(event, ts)
        if isinstance(event, FastEvent):
            _fast_change(event, version, ts, out)
            continue
        data = event.data
        lifecycle = _LIFECYCLES.get(event.type.split(".", 1)[0])
        if lifecycle is not None:
            _lifecycle_change(event, version, ts, out, lifecycle)
        elif isinstance(event, PositionUpdatedEvent):
            pos = event.data
            columns, attributes = _split(pos, POSITIONS, _POSITION_SKIP)
            columns["plugin_id"] = event.plugin_id
            if "is_active" not in columns:
                columns["is_active"] = int(pos.quantity != 0)
            pos_key = (event.account, event.source, event.mode, pos.position_id or pos.symbol)
            out.changes.append(
                as_change((POSITIONS.table, pos_key, version, ts, columns, attributes, {}))
            )
        elif isinstance(event, DailyStatsUpdatedEvent):
            columns, attributes = _split(event.data, DAILY_STATS, _DATE_SKIP)
            key = (event.account, event.source, event.plugin_id, event.mode, str(event.data.date))
            out.changes.append(
                as_change((DAILY_STATS.table, key, version, ts, columns, attributes, {}))
            )
        elif isinstance(event, JournalEntryEvent):
            entry = event.data
            _, attributes = _split(entry, TRADES, ("text", "title", "trade_id", "signal_id"))
            for name in ("category", "tags", "at"):
                attributes.pop(name, None)
            out.journal.append(
                (
                    event.id,
                    event.source,
                    event.account,
                    event.plugin_id,
                    event.mode,
                    utc_text(entry.at or event.ts),
                    entry.title,
                    entry.text,
                    entry.trade_id,
                    entry.signal_id,
                    entry.category,
                    dumps(entry.tags) if entry.tags is not None else None,
                    dumps(attributes),
                )
            )
        elif isinstance(event, AuditEventEvent):
            audit = event.data
            out.audit.append(
                (
                    event.id,
                    event.source,
                    event.account,
                    event.plugin_id,
                    event.mode,
                    ts,
                    audit.action,
                    audit.user,
                    audit.component,
                    audit.level,
                    dumps(audit.details) if audit.details is not None else None,
                    audit.ip_address,
                    dumps(audit.extras()),
                )
            )
        else:  # pragma: no cover - the union is closed
            raise AssertionError(f"no projection for {event.type}: {data!r}")
    return out


@dataclass(frozen=True, slots=True)
class _Lifecycle:
    """An entity that opens, changes and closes: trades and signals."""

    entity: Entity
    id_field: str
    opened: str  # the event types that open and close it
    closed: str
    open_status: str
    opened_at: str
    keeps_history: bool  # its status changes go to trade_status_history
    skip: frozenset[str]  # the id: part of the key, not a column to set


_TRADE = _Lifecycle(TRADES, "trade_id", "trade.opened", "trade.closed", "open",
                    "opened_at", keeps_history=True, skip=frozenset({"trade_id"}))  # fmt: skip
_SIGNAL = _Lifecycle(SIGNALS, "signal_id", "signal.emitted", "signal.closed", "active",
                     "emitted_at", keeps_history=False, skip=frozenset({"signal_id"}))  # fmt: skip
_LIFECYCLES = {"trade": _TRADE, "signal": _SIGNAL}


def _lifecycle_change(
    event: AnyEvent, version: str, ts: str, out: Projected, kind: _Lifecycle
) -> None:
    data = event.data
    columns, attributes = _split(data, kind.entity, kind.skip)
    _lifecycle_rows(event, version, ts, out, kind, columns, attributes,
                    getattr(data, kind.id_field))  # fmt: skip


def _lifecycle_rows(
    event: AnyDecoded,
    version: str,
    ts: str,
    out: Projected,
    kind: _Lifecycle,
    columns: dict[str, Any],
    attributes: dict[str, Any],
    item_id: str,
) -> None:
    if event.type == kind.opened:
        columns.setdefault("status", kind.open_status)
        columns.setdefault(kind.opened_at, ts)
    elif event.type == kind.closed:
        if columns.get("status") not in TERMINAL_STATUSES:
            columns["status"] = "closed"
        columns.setdefault("closed_at", ts)
    explicit, implicit = _tenancy(event)
    columns.update(explicit)
    key = (event.source, item_id)
    out.changes.append(
        as_change((kind.entity.table, key, version, ts, columns, attributes, implicit))
    )
    if kind.keeps_history and "status" in columns:
        out.status_history.append(
            (event.id, event.source, item_id, columns["status"], ts, event.type)
        )
