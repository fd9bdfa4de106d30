"""The database schema, as numbered migrations frozen in SQL files.

``migrations/NNNN.sql`` brings a database from version NNNN - 1 to NNNN. ``PRAGMA
user_version`` holds the number of the last migration applied. Each migration runs
in its own transaction and only ever moves the version forward, so running them
again changes nothing. The files are frozen: editing a class (an entity's columns,
an aggregate's SQL) never rewrites an old migration; a change is a new file.
"""

from __future__ import annotations

import functools
import sqlite3
from importlib.resources import files


def _statements(sql: str) -> list[str]:
    """A script's statements, one by one (a trigger's body holds semicolons)."""
    out: list[str] = []
    pending = ""
    for line in sql.splitlines(keepends=True):
        if not pending and (not line.strip() or line.lstrip().startswith("--")):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending.strip().rstrip(";"))
            pending = ""
    if pending.strip():
        raise ValueError(f"an unfinished statement in a migration: {pending[:80]!r}")
    return out


def _load() -> list[list[str]]:
    folder = files("worker.store") / "migrations"
    names = sorted(f.name for f in folder.iterdir() if f.name.endswith(".sql"))
    if names != [f"{n:04d}.sql" for n in range(1, len(names) + 1)]:
        raise RuntimeError(f"migrations are numbered 0001.sql upwards without gaps: {names}")
    return [_statements((folder / name).read_text()) for name in names]


# MIGRATIONS[n - 1] brings a database from version n - 1 to version n.
MIGRATIONS: list[list[str]] = _load()
SCHEMA_VERSION = len(MIGRATIONS)


# What a database of each version holds: (type, name, tbl_name, sql) rows of
# sqlite_master, with the SQL's whitespace collapsed. A file to restore must hold
# exactly the set of its version: a trigger or view of its own could rewrite rows
# later or show other data, and a foreign database would replace the live one.
SchemaRow = tuple[str, str, str, str | None]


def _normal(sql: str | None) -> str | None:
    return " ".join(sql.split()) if sql is not None else None


def schema_of(con: sqlite3.Connection) -> set[SchemaRow]:
    """The schema objects of ``con``'s main database (planner statistics left out)."""
    rows = con.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_stat%'"
    )
    return {(str(t), str(n), str(tbl), _normal(sql)) for t, n, tbl, sql in rows}


@functools.cache
def expected_schema(version: int) -> frozenset[SchemaRow]:
    """The schema a fresh database has after migrations 1..``version``."""
    con = sqlite3.connect(":memory:")
    try:
        for statements in MIGRATIONS[:version]:
            for statement in statements:
                con.execute(statement)
        return frozenset(schema_of(con))
    finally:
        con.close()


def _tables_first(key: tuple[str, str]) -> tuple[bool, str, str]:
    return key[0] == "index", key[0], key[1]


def schema_differences(con: sqlite3.Connection, version: int, limit: int = 5) -> list[str]:
    """How ``con``'s schema differs from tradescribe's schema ``version`` (empty: same)."""
    found = schema_of(con)
    expected = expected_schema(version)
    ours = {(t, n): sql for t, n, _, sql in expected}
    theirs = {(t, n): sql for t, n, _, sql in found}
    problems = []
    for key in sorted(theirs.keys() - ours.keys(), key=_tables_first):
        problems.append(f"{key[0]} {key[1]!r} is not part of it")
    for key in sorted(ours.keys() - theirs.keys(), key=_tables_first):
        problems.append(f"{key[0]} {key[1]!r} is missing")
    for key in sorted(ours.keys() & theirs.keys(), key=_tables_first):
        if ours[key] != theirs[key]:
            problems.append(f"{key[0]} {key[1]!r} is defined differently")
    if not problems and found != expected:
        problems.append("a table or index belongs to another table")
    more = len(problems) - limit
    return problems[:limit] + ([f"(+{more} more)"] if more > 0 else [])
