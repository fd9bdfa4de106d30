"""A batch's writes, planned and run in the process that holds the write connection.

The event loop validates a batch and projects it (:mod:`worker.store.projections`)
into plain tuples: the event log's rows, each event's :data:`~worker.store.rows.Change`
to an entity row, the append-only rows. That is a :class:`Planned` batch, cheap
to hand to the write process (:mod:`worker.store.writer`), which runs
:func:`write_planned`: inside one transaction it merges every change into the
entity rows it touches and turns the result into statements: an INSERT for a
row that is new, an UPDATE of only the columns that changed for a row that
exists (SQLite rewrites an index entry only when the UPDATE names one of its
columns, so a price tick does not touch the status and date indexes), and the
``trade_days``/``trade_months`` deltas of the trades whose closed P&L changed.

The two halves run on two cores: the event loop validates and projects the next
batch while the write process merges and commits this one. Standard library
only, so that the write process starts fast and small.

Where the current rows come from is a :class:`RowSource`: :class:`DbRows`
reads them inside the writing transaction (rebuilds); :class:`RowCache` keeps
the rows of recent batches in memory and reads the others through the same
connection, so the usual batch reads nothing before writing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import sqlite3
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from worker.store.aggregates import (
    AGGREGATES,
    BUMP_SETTLED,
    SETTLED_CHANGED,
    Aggregate,
    touches_settled,
)
from worker.store.entities import TRADES, Entity
from worker.store.rows import (
    ENTITY_BY_TABLE,
    TERMINAL_STATUSES,
    Change,
    Key,
    Row,
    as_change,
    dumps,
    merge,
    new_row,
    pack_versions,
    row_from_db,
    row_values,
)
from worker.store.sql import (
    INSERT_DEAD,
    INSERT_EVENT,
    SET_LAST,
    Statement,
    insert_sql,
    run_statements,
)

_KEYS_PER_QUERY = 400


class RowSource(Protocol):
    def rows(self, entity: Entity, keys: set[Key]) -> dict[Key, Row]:
        """The current rows for these keys (absent ones missing); the planner merges
        into them in place."""

    def keep(self, entity: Entity, rows: dict[Key, Row]) -> None:
        """The rows as this batch leaves them."""

    def clear(self) -> None:
        """Forget every row kept: the transaction they were merged for did not commit."""


@dataclass(slots=True)
class DbRows:
    """Rows read from the database through the connection that writes them."""

    con: sqlite3.Connection

    def rows(self, entity: Entity, keys: set[Key]) -> dict[Key, Row]:
        return load_rows(self.con, entity, keys)

    def keep(self, entity: Entity, rows: dict[Key, Row]) -> None:
        pass

    def clear(self) -> None:
        pass


class RowCache:
    """The entity rows of recent batches, in memory, bounded by ``limit`` rows.

    Used by the one connection that writes (``con``), batch after batch: the rows
    it keeps are what the file holds once the batch in hand commits, and a row
    not kept is read through ``con`` inside the batch's transaction. The least
    recently touched rows go first, terminal ones before any other. After a
    batch fails, :meth:`clear` (its merged rows were rolled back).
    """

    def __init__(self, con: sqlite3.Connection, limit: int) -> None:
        self.con = con
        self.limit = limit
        self._rows: OrderedDict[tuple[str, Key], Row] = OrderedDict()
        self._terminal: OrderedDict[tuple[str, Key], None] = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._rows)

    def clear(self) -> None:
        self._rows.clear()
        self._terminal.clear()

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
            found.update(load_rows(self.con, entity, missing))
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


# -- trade_days and trade_months deltas -----------------------------------------------


@dataclass(slots=True)
class Sums:
    """One bucket's deltas, in the order of :data:`worker.store.aggregates.SUMS`."""

    trades: int = 0
    wins: int = 0
    losses: int = 0
    gross_profit: float = 0.0
    gross_loss: float = 0.0
    best: float | None = None  # of the trades added (a removed one is recomputed)
    worst: float | None = None

    def values(self) -> tuple[Any, ...]:
        return (self.trades, self.wins, self.losses, self.gross_profit, self.gross_loss,
                self.best, self.worst)  # fmt: skip


@dataclass(slots=True)
class AggregateDeltas:
    """One batch's changes to each aggregate (``trade_days``, ``trade_months``): deltas
    summed per bucket, and the buckets whose best or worst may have left."""

    sums: dict[Aggregate, dict[Key, Sums]] = field(
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
    def _add(sums: dict[Key, Sums], bucket: Key, pnl: float | None, sign: int) -> None:
        s = sums.get(bucket)
        if s is None:
            s = sums[bucket] = Sums()
        s.trades += sign
        if pnl is not None:
            s.wins += sign * (pnl > 0)
            s.losses += sign * (pnl < 0)
            s.gross_profit += sign * max(pnl, 0.0)
            s.gross_loss += sign * min(pnl, 0.0)
            if sign > 0:
                s.best = pnl if s.best is None else max(s.best, pnl)
                s.worst = pnl if s.worst is None else min(s.worst, pnl)

    def statements(self, today: dt.date | None = None) -> list[Statement]:
        out: list[Statement] = []
        for aggregate in AGGREGATES:
            if sums := self.sums[aggregate]:
                out.append((aggregate.add_sql, [(*b, *s.values()) for b, s in sums.items()]))
            if recompute := self.recompute[aggregate]:
                out.append((aggregate.recompute_sql, sorted(recompute)))
        periods = (k[0] for a in AGGREGATES for k in (*self.sums[a], *self.recompute[a]))
        if touches_settled(periods, today or dt.datetime.now(dt.UTC).date()):
            out.append((BUMP_SETTLED, [(SETTLED_CHANGED, "1")]))
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
    changes: Iterable[Change], source: RowSource, aggregates: bool = True
) -> list[Statement]:
    """Merge a batch's changes into the current rows; the statements that store them
    (without the aggregates' deltas when the caller sums those afresh afterwards)."""
    by_table: dict[str, list[Change]] = defaultdict(list)
    for change in changes:
        by_table[change.table].append(change)
    statements: list[Statement] = []
    deltas = AggregateDeltas()
    for table, entity_changes in by_table.items():
        entity = ENTITY_BY_TABLE[table]
        rows = source.rows(entity, {c.key for c in entity_changes})
        before: dict[Key, Row | None] = {}
        for change in entity_changes:
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
                deltas.change(old, row)
        if inserts:
            statements.append((upsert_sql(entity), inserts))
        statements.extend((_update_sql(entity, n), v) for n, v in updates.items())
    statements.extend(deltas.statements())
    return statements


@dataclass(slots=True)
class Planned:
    """One batch as the event loop hands it to the writing connection: plain tuples."""

    events: list[tuple[Any, ...]]  # the event log's rows
    changes: list[Change]  # merged into the entity rows at write time
    appends: list[Statement]  # status history, journal, audit: inserted as they are
    dead: list[tuple[Any, ...]]
    last_stream_id: str | None

    # Changes travel to the write process as plain tuples: a named tuple pickles and
    # unpickles through a Python call each (twice the event loop's pickling time).
    def __getstate__(self) -> tuple[Any, ...]:
        plain = list(map(tuple, self.changes))
        return self.events, plain, self.appends, self.dead, self.last_stream_id

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.events, plain, self.appends, self.dead, self.last_stream_id = state
        self.changes = [as_change(c) for c in plain]


def write_planned(con: sqlite3.Connection, batch: Planned, source: RowSource) -> tuple[int, int]:
    """Store one batch in one transaction; returns (events new to the log, id conflicts).

    A change is applied only for an event the log accepted in this transaction: an
    event whose id the log holds already is a duplicate (same body: nothing to do) or
    an id conflict (another body: a dead letter, its changes dropped), so the tables
    stay a function of the log. A batch holds an id once (the event loop sees to it).
    On any error the transaction is rolled back (if SQLite has not ended it
    already) and ``source`` forgets its rows, then the error is raised.
    """
    con.execute("BEGIN IMMEDIATE")
    try:
        before = con.total_changes
        top = con.execute("SELECT max(seq) FROM events").fetchone()[0] or 0
        con.executemany(INSERT_EVENT, batch.events)
        inserted = con.total_changes - before
        changes, appends, dead = batch.changes, batch.appends, batch.dead
        conflicts = 0
        if inserted != len(batch.events):  # some ids were in the log already
            refused, conflicted = _not_new(con, batch.events, top)
            changes = [c for c in changes if c.event_id not in refused]
            appends = [(sql, [r for r in rows if r[0] not in refused]) for sql, rows in appends]
            dead = [*dead, *conflicted]
            conflicts = len(conflicted)
        run_statements(con, plan_projections(changes, source))
        run_statements(con, appends)
        if dead:
            con.executemany(INSERT_DEAD, dead)
        if batch.last_stream_id is not None:
            con.execute(SET_LAST, (batch.last_stream_id,))
        con.execute("COMMIT")
    except BaseException:
        source.clear()
        if con.in_transaction:  # SQLite ends some on its own (SQLITE_FULL)
            with contextlib.suppress(sqlite3.Error):  # report the error that got us here
                con.execute("ROLLBACK")
        raise
    return inserted, conflicts


def _not_new(
    con: sqlite3.Connection, events: list[tuple[Any, ...]], top: int
) -> tuple[set[str], list[tuple[Any, ...]]]:
    """Of a batch's event rows, the ids the log did not take from this batch (it held
    them already), and the dead letters of those whose stored body differs."""
    new = {r[0] for r in con.execute("SELECT event_id FROM events WHERE seq > ?", (top,))}
    refused: set[str] = set()
    dead: list[tuple[Any, ...]] = []
    for row in events:
        event_id = row[0]
        if event_id in new:
            continue
        refused.add(event_id)
        stored = con.execute(
            "SELECT stream_id, body FROM events WHERE event_id = ?", (event_id,)
        ).fetchone()
        conflict = id_conflict(row, stored)
        if conflict is not None:
            dead.append(conflict)
    return refused, dead


def id_conflict(row: tuple[Any, ...], stored: Sequence[Any] | None) -> tuple[Any, ...] | None:
    """The dead letter of an event-log ``row`` whose id the log holds as ``stored``
    (stream id, body), or None when it is the same event (a redelivery, a replay or a
    re-import: already in the log). Every store engine applies this one rule."""
    event_id, stream_id, now, body = row[0], row[8], row[9], row[10]
    if stored is None or same_event(stored[1], body):
        return None
    reason = (
        f"id conflict: event {event_id} is in the event log from stream entry "
        f"{stored[0]} with another body (that one is kept in the log, this one here)"
    )
    return (stream_id, event_id, body.encode(), reason, 1, now, None, None)


def same_event(a: str, b: str) -> bool:
    """Two bodies of one event id say the same: byte for byte, or as JSON once the
    spellings that do not change an event are set aside (a UUID's case; a time's
    offset: ``...Z`` and ``...+00:00`` are one instant, as the projections see it)."""
    if a == b:
        return True
    try:
        x, y = json.loads(a), json.loads(b)
    except (ValueError, RecursionError):
        return False
    for value in (x, y):
        if isinstance(value, dict) and isinstance(value.get("id"), str):
            value["id"] = value["id"].lower()
    return bool(_instants(x) == _instants(y))


_TIME_TEXT = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d.*(Z|[+-]\d\d:?\d\d)", re.IGNORECASE)


def _instants(value: Any) -> Any:
    """``value`` with every aware time text replaced by the instant it names."""
    if isinstance(value, dict):
        return {k: _instants(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_instants(v) for v in value]
    if isinstance(value, str) and _TIME_TEXT.fullmatch(value):
        try:
            moment = dt.datetime.fromisoformat(value)
            return moment.astimezone(dt.UTC) if moment.tzinfo else value
        except (ValueError, OverflowError):
            return value
    return value


# -- reading stored rows --------------------------------------------------------------


def upsert_sql(entity: Entity) -> str:
    """Insert a merged row, or update the stored one in place (cheaper than REPLACE,
    which deletes and re-inserts every index entry)."""
    values = ", ".join(f"{c} = excluded.{c}" for c in entity.all_columns if c not in entity.key)
    return f"{insert_sql(entity.table, entity.all_columns, 'INSERT')} " + (
        f"ON CONFLICT ({', '.join(entity.key)}) DO UPDATE SET {values}"
    )


def load_rows(con: sqlite3.Connection, entity: Entity, keys: Iterable[Key]) -> dict[Key, Row]:
    """The stored rows for these keys (absent keys are simply missing).

    Keys are grouped by all but their last column, which goes into an IN
    list, so every lookup is a primary-key search (a row-value IN over
    VALUES would make SQLite scan the whole table).
    """
    by_prefix: dict[Key, list[Any]] = defaultdict(list)
    for key in keys:
        by_prefix[key[:-1]].append(key[-1])
    found: dict[Key, Row] = {}
    cols = ", ".join(entity.all_columns)
    prefix_match = " AND ".join(f"{k} = ?" for k in entity.key[:-1])
    width = len(entity.key)
    for prefix, lasts in by_prefix.items():
        for start in range(0, len(lasts), _KEYS_PER_QUERY):
            chunk = lasts[start : start + _KEYS_PER_QUERY]
            marks = ", ".join("?" * len(chunk))
            sql = (
                f"SELECT {cols} FROM {entity.table} "
                f"WHERE {prefix_match} AND {entity.key[-1]} IN ({marks})"
            )
            for record in con.execute(sql, (*prefix, *chunk)):
                found[tuple(record[:width])] = row_from_db(entity, tuple(record))
    return found
