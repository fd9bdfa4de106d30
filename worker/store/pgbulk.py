"""The planner's many-row INSERTs as one statement each, for PostgreSQL.

``executemany`` of ``INSERT ... VALUES ($1, ...)`` runs the statement once per row:
the server binds, plans and starts an executor for every row. The same rows sent as
one array per column, ``INSERT ... SELECT * FROM unnest($1::t1[], ...)``, run the
executor once for the lot. Measured on the benchmark's event mix (``python -m
bench.pgdrain``), that is most of what the store's transaction cost PostgreSQL.

One rule of PostgreSQL's decides which rows may go that way: one ``INSERT ... ON
CONFLICT DO UPDATE`` may not touch a row twice, so rows that repeat a conflict key go
through ``executemany`` as before (the planner merges a batch's changes per key, so in
practice they do not repeat). ``ON CONFLICT DO NOTHING`` has no such rule. Any other
statement (the planner's UPDATEs) is run with ``executemany`` as it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_INSERT = re.compile(
    r"^INSERT INTO (?P<table>\w+)(?P<alias> AS \w+)? \((?P<columns>[^)]*)\)\s+"
    r"VALUES \((?P<params>\$\d+(?:,\s*\$\d+)*)\)(?P<tail>.*)$",
    re.DOTALL,
)
_CONFLICT = re.compile(r"ON CONFLICT \((?P<key>[^)]*)\)\s+DO UPDATE")

# A table's column types, as ``information_schema`` names them, for the array casts.
ColumnTypes = dict[str, dict[str, str]]

COLUMN_TYPES_SQL = """SELECT table_name, column_name, udt_name FROM information_schema.columns
WHERE table_schema = current_schema()"""


@dataclass(frozen=True, slots=True)
class Bulk:
    """How one planner INSERT runs as a single statement over column arrays."""

    sql: str  # INSERT ... SELECT * FROM unnest($1::type[], ...) ...
    key: tuple[int, ...]  # positions of the DO UPDATE conflict key; () when none


def column_types(rows: Sequence[Sequence[Any]]) -> ColumnTypes:
    """The result of :data:`COLUMN_TYPES_SQL` as a table -> column -> type map."""
    types: ColumnTypes = {}
    for table, column, udt in rows:
        types.setdefault(table, {})[column] = udt
    return types


def bulk_of(sql: str, types: ColumnTypes) -> Bulk | None:
    """``sql`` (a PostgreSQL statement) as a :class:`Bulk`, or None if it is not a
    one-row ``INSERT ... VALUES`` with its parameters in column order."""
    m = _INSERT.match(sql)
    if m is None or m["table"] not in types:
        return None
    columns = [c.strip().strip('"') for c in m["columns"].split(",")]
    params = [p.strip() for p in m["params"].split(",")]
    if params != [f"${i}" for i in range(1, len(columns) + 1)]:
        return None
    known = types[m["table"]]
    if any(c not in known for c in columns):
        return None
    arrays = ", ".join(f"${i}::{known[c]}[]" for i, c in enumerate(columns, 1))
    key: tuple[int, ...] = ()
    conflict = _CONFLICT.search(m["tail"])
    if conflict is not None:
        names = [k.strip() for k in conflict["key"].split(",")]
        if any(n not in columns for n in names):
            return None
        key = tuple(columns.index(n) for n in names)
    text = (
        f"INSERT INTO {m['table']}{m['alias'] or ''} ({m['columns']}) "
        f"SELECT * FROM unnest({arrays}){m['tail']}"
    )
    return Bulk(text, key)


def repeats_a_key(bulk: Bulk, rows: Sequence[Sequence[Any]]) -> bool:
    """True if two rows share the DO UPDATE conflict key (PostgreSQL refuses that)."""
    if not bulk.key:
        return False
    seen = {tuple(row[i] for i in bulk.key) for row in rows}
    return len(seen) != len(rows)


def as_columns(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """The rows (at least one) as one list per column, the statement's parameters."""
    return [list(column) for column in zip(*rows, strict=True)]
