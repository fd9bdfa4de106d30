"""What a batch of stream entries becomes before it is written.

A stream entry is :class:`Decoded` (valid) or a :class:`DeadLetter`;
:func:`plan_batch` turns a batch of them into a :class:`~worker.store.write.Planned`
batch (plain tuples: the event log's rows, each event's change to its entity
row, the append-only rows), which :func:`worker.store.write.write_planned` stores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from contracts.events import AnyEvent
from worker.store.entities import AUDIT_COLUMNS, JOURNAL_COLUMNS, STATUS_HISTORY_COLUMNS
from worker.store.projections import FastEvent, Projected, project, utc_text
from worker.store.sql import Statement, insert_sql
from worker.store.write import Planned


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs twice as much
class Decoded:
    """A stream entry that decoded and validated."""

    stream_id: str
    body: str
    event: AnyEvent | FastEvent  # FastEvent: proven by worker.fastdecode


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A stream entry that cannot be stored, and why."""

    stream_id: str
    raw: bytes
    reason: str
    event_id: str | None = None
    deliveries: int = 1
    raw_size: int | None = None  # when ``raw`` is only the first bytes of the entry:
    raw_sha256: str | None = None  # its whole size and hash


_SUBJECT_FIELDS = ("trade_id", "signal_id", "position_id", "symbol", "date")


def _subject(event: AnyEvent | FastEvent) -> str | None:
    """The first of these the payload has (a declared field or an extra one)."""
    if isinstance(event, FastEvent):
        return event.subject
    data = event.data
    values = vars(data)
    extra = data.model_extra or {}
    for name in _SUBJECT_FIELDS:
        value = values.get(name)
        if value is None:
            value = extra.get(name)
        if value is not None:
            return str(value)
    return None


def stream_order(stream_id: str) -> tuple[int, int]:
    """A Redis stream id as a sortable (milliseconds, sequence) pair."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def event_row(d: Decoded, now: str, ts: str | None = None) -> tuple[Any, ...]:
    e = d.event
    return (
        e.id,
        e.type,
        e.source,
        e.account,
        e.plugin_id,
        e.mode,
        _subject(e),
        ts or utc_text(e.ts),
        d.stream_id,
        now,
        d.body,
    )


_INSERT_STATUS = insert_sql("trade_status_history", STATUS_HISTORY_COLUMNS)
_INSERT_JOURNAL = insert_sql("journal_entries", JOURNAL_COLUMNS)
_INSERT_AUDIT = insert_sql("audit_log", AUDIT_COLUMNS)


def append_statements(projected: Projected) -> list[Statement]:
    """The inserts of the append-only rows: status history, journal, audit."""
    return [
        (sql, rows)
        for sql, rows in (
            (_INSERT_STATUS, projected.status_history),
            (_INSERT_JOURNAL, projected.journal),
            (_INSERT_AUDIT, projected.audit),
        )
        if rows
    ]


def plan_batch(good: Sequence[Decoded], dead: Sequence[DeadLetter], now: str) -> Planned:
    """A batch's rows and changes, for :func:`worker.store.write.write_planned` (pure: no I/O).

    ``good`` and ``dead`` are each in stream order, as they were read, so the batch's
    last stream id is the later of their last ones.
    """
    lasts = [x[-1].stream_id for x in (good, dead) if x]
    texts = [utc_text(d.event.ts) for d in good]  # once per event, for the log and the rows
    projected = project((d.event for d in good), texts)
    return Planned(
        events=[event_row(d, now, ts) for d, ts in zip(good, texts, strict=True)],
        changes=projected.changes,
        appends=append_statements(projected),
        dead=[
            (d.stream_id, d.event_id, d.raw, d.reason, d.deliveries, now, d.raw_size, d.raw_sha256)
            for d in dead
        ],
        last_stream_id=max(lasts, key=stream_order) if lasts else None,
    )
