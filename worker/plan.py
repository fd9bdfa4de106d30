"""A batch's writes, planned in Python before the SQLite thread runs them.

Planning merges every change into the entity rows it touches and turns the
result into statements: an INSERT for a row that is new, an UPDATE of only
the columns that changed for a row that exists (SQLite rewrites an index
entry only when the UPDATE names one of its columns, so a price tick does
not touch the status and date indexes), and the ``trade_days`` deltas of the
trades whose closed P&L changed. Running the statements is then pure SQLite
(:mod:`worker.commit`), done by the write process (:mod:`worker.writer`) while
the event loop decodes and plans the next batch.

Where the current rows come from is a :class:`RowSource`: :class:`DbRows`
reads them inside the writing transaction (rebuilds, and the fallback after a
failed commit); :class:`RowCache` keeps the rows of recent batches in memory,
so the usual batch reads nothing from the database before writing.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from contracts.events import TERMINAL_STATUSES
from worker.aggregates import AGGREGATES, Aggregate
from worker.batchwrite import (
    DeadLetter,
    Decoded,
    event_row,
    load_rows,
    stream_order,
    upsert_sql,
)
from worker.commit import Prepared, Statement, insert_sql, write_rows
from worker.projections import (
    AUDIT_COLUMNS,
    JOURNAL_COLUMNS,
    STATUS_HISTORY_COLUMNS,
    TRADES,
    Change,
    Entity,
    Projected,
    dumps,
    merge,
    new_row,
    pack_versions,
    project,
    row_values,
    utc_text,
)

Key = tuple[Any, ...]
Row = dict[str, Any]


class RowSource(Protocol):
    def rows(self, entity: Entity, keys: set[Key]) -> dict[Key, Row]:
        """The current rows for these keys (absent ones missing); the planner merges
        into them in place."""

    def keep(self, entity: Entity, rows: dict[Key, Row]) -> None:
        """The rows as this batch leaves them."""


@dataclass(slots=True)
class DbRows:
    """Rows read from the database through the connection that writes them."""

    con: sqlite3.Connection

    def rows(self, entity: Entity, keys: set[Key]) -> dict[Key, Row]:
        return load_rows(self.con, entity, keys)

    def keep(self, entity: Entity, rows: dict[Key, Row]) -> None:
        pass


class RowCache:
    """The entity rows of recent batches, in memory, bounded by ``limit`` rows.

    Every row a batch leaves is kept, committed or not yet: the worker commits
    batches in the order they were planned, so the next batch must merge into
    them. Rows not kept are read from the file through a read-only connection;
    that is safe because a row in a batch not yet committed is always kept (the
    least recently touched rows go first, terminal ones before any other, and
    the bound is several batches). :meth:`clear` after anything else wrote the
    rows, such as the fallback commit.
    """

    def __init__(self, db: Path, limit: int) -> None:
        self.db = db
        self.limit = limit
        self.generation = 0
        self._rows: OrderedDict[tuple[str, Key], Row] = OrderedDict()
        self._terminal: OrderedDict[tuple[str, Key], None] = OrderedDict()
        self._reader: sqlite3.Connection | None = None
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._rows)

    def clear(self) -> None:
        self._rows.clear()
        self._terminal.clear()
        self.generation += 1

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def rows(self, entity: Entity, keys: set[Key]) -> dict[Key, Row]:
        found: dict[Key, Row] = {}
        missing: set[Key] = set()
        table = entity.table
        for key in keys:
            row = self._rows.get((table, key))
            if row is None:
                missing.add(key)
            else:
                found[key] = row
        self.hits += len(found)
        self.misses += len(missing)
        if missing:
            found.update(load_rows(self._read(), entity, missing))
        return found

    def keep(self, entity: Entity, rows: dict[Key, Row]) -> None:
        table = entity.table
        for key, row in rows.items():
            slot = (table, key)
            self._rows[slot] = row
            self._rows.move_to_end(slot)
            if row.get("status") in TERMINAL_STATUSES:
                self._terminal[slot] = None
                self._terminal.move_to_end(slot)
            else:
                self._terminal.pop(slot, None)
        self._evict()

    def _evict(self) -> None:
        rows, terminal = self._rows, self._terminal
        # Terminal rows (a closed trade rarely hears more) make room first, oldest first;
        # then the least recently touched. Rows the last batches touched are at the end.
        while len(rows) > self.limit and len(terminal) > self.limit // 2:
            slot, _ = terminal.popitem(last=False)
            rows.pop(slot, None)
        while len(rows) > self.limit:
            slot, _ = rows.popitem(last=False)
            terminal.pop(slot, None)

    def _read(self) -> sqlite3.Connection:
        if self._reader is None:
            self._reader = sqlite3.connect(
                f"file:{self.db}?mode=ro", uri=True, isolation_level=None
            )
        return self._reader


# -- trade_days and trade_months deltas -----------------------------------------------


@dataclass(slots=True)
class TradeDays:
    """One batch's changes to each aggregate (``trade_days``, ``trade_months``): deltas
    summed per bucket, and the buckets whose best or worst may have left."""

    sums: dict[Aggregate, dict[Key, list[Any]]] = field(
        default_factory=lambda: {a: {} for a in AGGREGATES}
    )
    recompute: dict[Aggregate, set[Key]] = field(
        default_factory=lambda: {a: set() for a in AGGREGATES}
    )

    def change(self, before: Row | None, after: Row) -> None:
        for aggregate in AGGREGATES:
            old, new = aggregate.contribution(before), aggregate.contribution(after)
            if old == new:
                continue
            sums = self.sums[aggregate]
            if old is not None:
                self._add(sums, old[0], old[1], -1)
                if old[1] is not None:  # a trade without P&L was never a best or a worst
                    self.recompute[aggregate].add((*old[0], old[1], old[1]))
            if new is not None:
                self._add(sums, new[0], new[1], 1)

    @staticmethod
    def _add(sums: dict[Key, list[Any]], bucket: Key, pnl: float | None, sign: int) -> None:
        s = sums.get(bucket)
        if s is None:
            s = sums[bucket] = [0, 0, 0, 0.0, 0.0, None, None]
        s[0] += sign
        if pnl is not None:
            s[1] += sign * (pnl > 0)
            s[2] += sign * (pnl < 0)
            s[3] += sign * max(pnl, 0.0)
            s[4] += sign * min(pnl, 0.0)
            if sign > 0:
                s[5] = pnl if s[5] is None else max(s[5], pnl)
                s[6] = pnl if s[6] is None else min(s[6], pnl)

    def statements(self) -> list[Statement]:
        out: list[Statement] = []
        for aggregate in AGGREGATES:
            if sums := self.sums[aggregate]:
                out.append((aggregate.add_sql, [(*b, *s) for b, s in sums.items()]))
            if recompute := self.recompute[aggregate]:
                out.append((aggregate.recompute_sql, sorted(recompute)))
        return out


# -- planning -----------------------------------------------------------------------


def _snapshot(row: Row) -> Row:
    """A copy that merging into ``row`` leaves alone (merge replaces values, never
    mutates them, so the JSON dicts need only a shallow copy)."""
    copy = dict(row)
    copy["attributes"] = dict(row["attributes"])
    copy["versions"] = dict(row["versions"])
    return copy


def _update_sql(entity: Entity, columns: tuple[str, ...]) -> str:
    sets = ", ".join(f"{c} = ?" for c in columns)
    where = " AND ".join(f"{k} = ?" for k in entity.key)
    return f"UPDATE {entity.table} SET {sets} WHERE {where}"


def _changed(entity: Entity, before: Row, after: Row) -> tuple[tuple[str, ...], list[Any]]:
    """The columns a merge changed and their new values, as stored."""
    names: list[str] = []
    values: list[Any] = []
    for c in entity.columns:
        if before[c] != after[c]:
            names.append(c)
            values.append(after[c])
    for c in ("created_at", "updated_at"):
        if before[c] != after[c]:
            names.append(c)
            values.append(after[c])
    if before["attributes"] != after["attributes"]:
        names.append("attributes")
        values.append(dumps(after["attributes"]))
    if before["versions"] != after["versions"]:
        names.append("versions")
        values.append(dumps(pack_versions(after["versions"])))
    return tuple(names), values


def plan_projections(
    projected: Projected, source: RowSource, aggregates: bool = True
) -> list[Statement]:
    """Merge a batch's changes into the current rows; the statements that store them
    (without the aggregates' deltas when the caller sums those afresh afterwards)."""
    by_entity: dict[Entity, list[Change]] = defaultdict(list)
    for change in projected.changes:
        by_entity[change.entity].append(change)
    statements: list[Statement] = []
    days = TradeDays()
    for entity, changes in by_entity.items():
        rows = source.rows(entity, {c.key for c in changes})
        before: dict[Key, Row | None] = {}
        for change in changes:
            key = change.key
            row = rows.get(key)
            if key not in before:
                before[key] = None if row is None else _snapshot(row)
            if row is None:
                row = rows[key] = new_row(entity, key, change.ts)
            merge(row, change)
        source.keep(entity, rows)
        inserts: list[tuple[Any, ...]] = []
        updates: dict[tuple[str, ...], list[tuple[Any, ...]]] = defaultdict(list)
        for key, old in before.items():
            row = rows[key]
            if old is None:
                inserts.append(row_values(entity, row))
            else:
                names, values = _changed(entity, old, row)
                if not names:
                    continue  # a redelivered event: nothing to write
                updates[names].append((*values, *key))
            if entity is TRADES and aggregates:
                days.change(old, row)
        if inserts:
            statements.append((upsert_sql(entity), inserts))
        statements.extend((_update_sql(entity, n), v) for n, v in updates.items())
    statements.extend(days.statements())
    for table, columns, rows_ in (
        ("trade_status_history", STATUS_HISTORY_COLUMNS, projected.status_history),
        ("journal_entries", JOURNAL_COLUMNS, projected.journal),
        ("audit_log", AUDIT_COLUMNS, projected.audit),
    ):
        if rows_:
            statements.append((insert_sql(table, columns), rows_))
    return statements


def plan_rows(statements: Sequence[Statement]) -> int:
    return sum(len(p) for _, p in statements)


def prepare_batch(
    good: Sequence[Decoded], dead: Sequence[DeadLetter], now: str, source: RowSource
) -> Prepared:
    ids = [x.stream_id for x in good] + [x.stream_id for x in dead]
    texts = [utc_text(d.event.ts) for d in good]  # once per event, for the log and the rows
    return Prepared(
        events=[event_row(d, now, ts) for d, ts in zip(good, texts, strict=True)],
        statements=plan_projections(project((d.event for d in good), texts), source),
        dead=[(d.stream_id, d.event_id, d.raw, d.reason, d.deliveries, now) for d in dead],
        last_stream_id=max(ids, key=stream_order) if ids else None,
    )


def write_batch(
    con: sqlite3.Connection, good: Sequence[Decoded], dead: Sequence[DeadLetter], now: str
) -> int:
    """Like :func:`write_prepared`, planning with the rows read inside the transaction."""
    con.execute("BEGIN IMMEDIATE")
    inserted = write_rows(con, prepare_batch(good, dead, now, DbRows(con)))
    con.execute("COMMIT")
    return inserted
