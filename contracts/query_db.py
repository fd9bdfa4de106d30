"""The read side's two engines: a read-only connection to the SQLite file or to PostgreSQL,
and the few pieces of SQL the two dialects write differently.

The queries (``contracts.query_sql``, ``contracts.query_stats``) are one SQL text each,
written with ``?`` marks; where the dialects differ they ask the connection's
:class:`Dialect` for the piece (an integer sum, a sum that is 0.0 over no rows, a
case-insensitive substring test, a JSON array as rows, SQLite's "not by this index"
``+``). PostgreSQL is read with psycopg 3 (the ``[postgres]`` extra), imported only
when a ``postgresql://`` URL is given: a bot that reads SQLite needs nothing more than
the standard library. Why psycopg and not asyncpg (which the worker writes with):
docs/postgresql.md, "Reading".
"""

from __future__ import annotations

import contextlib
import functools
import re
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from contracts.query_model import QueryError
from contracts.redisurl import mask_url

PG_SCHEMES = ("postgres://", "postgresql://")
INSTALL = "pip install 'tradescribe[postgres]'"


def is_url(db: str | Path) -> bool:
    """A PostgreSQL URL (a ``str``: a ``Path`` would fold its ``//``), not a file path."""
    return isinstance(db, str) and db.startswith(PG_SCHEMES)


@dataclass(frozen=True)
class Dialect:
    """What SQLite and PostgreSQL spell differently, as SQL pieces."""

    name: str
    # SQLite's unary + keeps its planner off an index for a term; PostgreSQL has no
    # such hint (and no unary + on text)
    noindex: str
    has_table: str

    def isum(self, expr: str) -> str:
        """sum() of integers, an integer (PostgreSQL's sum(bigint) is numeric)."""
        return f"sum({expr})" if self.name == "sqlite" else f"sum({expr})::bigint"

    def total(self, expr: str) -> str:
        """SQLite's total(): the float sum, 0.0 over no rows."""
        return f"total({expr})" if self.name == "sqlite" else f"coalesce(sum({expr}), 0.0)"

    def count_if(self, condition: str) -> str:
        """The rows where ``condition`` holds (NULL over no rows, as SQLite's sum)."""
        if self.name == "sqlite":
            return f"sum({condition})"
        return f"sum(({condition})::int)::bigint"

    def contains(self, column: str) -> str:
        """``column`` holds the bound text, ASCII letters case-folded (both engines'
        lower() fold ASCII only: SQLite's without ICU, PostgreSQL's under COLLATE "C")."""
        find = "instr" if self.name == "sqlite" else "strpos"
        return f"{find}(lower({column}), lower(?)) > 0"

    def json_rows(self, alias: str) -> tuple[str, str]:
        """A bound JSON array as rows: the FROM item (columns ``value`` and its 0-based
        index) and the index's expression."""
        if self.name == "sqlite":
            return f"json_each(?) {alias}", f"{alias}.key"
        return (
            f"jsonb_array_elements(CAST(? AS jsonb)) WITH ORDINALITY AS {alias}(value, n)",
            f"({alias}.n - 1)",
        )

    def json_texts(self, column: str) -> str:
        """A bound JSON array of strings as a FROM item with one column, ``column``."""
        if self.name == "sqlite":
            return f"(SELECT value AS {column} FROM json_each(?))"
        return f"jsonb_array_elements_text(CAST(? AS jsonb)) AS j({column})"

    def nulls_first(self, column: str) -> str:
        """An ascending ORDER BY term with NULLs first, as SQLite sorts them."""
        return column if self.name == "sqlite" else f"{column} NULLS FIRST"


SQLITE = Dialect("sqlite", "+", "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?")
POSTGRES = Dialect(
    "postgresql",
    "",
    "SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = ?",
)


class Cursor(Protocol):
    """The part of a DB-API cursor the queries use (sqlite3's and psycopg's)."""

    @property
    def description(self) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class ReadConnection:
    """A read-only connection of either engine: ``execute(sql, params)`` with ``?``
    marks, and the engine's :class:`Dialect` in ``d``."""

    def __init__(self, con: Any, dialect: Dialect) -> None:
        self.con = con
        self.d = dialect
        self.tables: dict[str, bool] = {}  # has_table's answers, asked once per connection
        # When set (a dashboard's reads on one connection; serve's reads of one SQLite
        # version, worker/http/memo.py): the records of the aggregate reads by (SQL,
        # parameters), so a sum asked twice is read once.
        self.memo: dict[Any, Any] | None = None
        # serve's reads of a SQLite file: a few reads kept across its versions, under
        # a key that holds what they depend on (worker/http/memo.py ``Lasting``).
        self.lasting: Any = None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        if self.d is SQLITE:
            return self.con.execute(sql, params)  # type: ignore[no-any-return]
        return self.con.execute(pg_marks(sql), params)  # type: ignore[no-any-return]

    def renew(self) -> None:
        """See what was committed since (a poll): PostgreSQL's snapshot is per
        transaction; SQLite's read ends with each statement."""
        if self.d is POSTGRES:
            self.con.rollback()


@functools.lru_cache(maxsize=512)
def pg_marks(sql: str) -> str:
    """``?`` marks as psycopg's ``%s`` (a literal ``%`` doubled). The queries hold no
    ``?`` inside a string literal."""
    return re.sub(r"\?", "%s", sql.replace("%", "%%"))


@contextlib.contextmanager
def connect_readonly(db: str | Path) -> Iterator[ReadConnection]:
    """A read-only connection to the SQLite file (``mode=ro``: it can never write or
    create the file) or to the PostgreSQL a ``postgresql://`` URL names (read-only
    transactions, one snapshot per query)."""
    if is_url(db):
        with _postgres(str(db)) as con:
            yield con
        return
    with _sqlite(Path(db)) as con:
        yield con


@contextlib.contextmanager
def _sqlite(db: Path) -> Iterator[ReadConnection]:
    path = db.expanduser().resolve()
    if not path.is_file():
        raise QueryError(f"database {path} does not exist; pass the worker's file with --db")
    con = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5.0)
    try:
        con.execute("PRAGMA query_only = ON")
        yield ReadConnection(con, SQLITE)
    except sqlite3.DatabaseError as exc:  # also "file is not a database"
        if isinstance(exc, sqlite3.OperationalError) and not _foreign(exc):
            raise QueryError(f"cannot read {path}: {exc}") from exc
        raise QueryError(
            f"{path} is not a tradescribe database (or not migrated yet): {exc}; "
            "pass the worker's file with --db, or start the worker on it once"
        ) from exc
    finally:
        con.close()


def _foreign(exc: sqlite3.Error) -> bool:
    """A table or column tradescribe's schema has is missing: someone else's file."""
    return str(exc).startswith(("no such table", "no such column"))


def psycopg_module() -> Any:
    """psycopg, or a one-line QueryError naming the extra that installs it."""
    try:
        import psycopg
    except ImportError:
        raise QueryError(f"reading PostgreSQL needs the psycopg driver: {INSTALL}") from None
    return psycopg


def connect_postgres(url: str, *, read_only: bool) -> Any:
    """A psycopg connection (not in autocommit: one snapshot per transaction), or a
    one-line QueryError saying which server could not be reached."""
    psycopg = psycopg_module()
    try:
        con = psycopg.connect(url, connect_timeout=10, application_name="tradescribe reader")
    except psycopg.Error as exc:
        reason = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise QueryError(
            f"cannot connect to PostgreSQL at {mask_url(url)}: {reason}; check the URL "
            "and that the server runs"
        ) from None
    con.adapters.register_loader("float8", _float_loader(psycopg))
    if read_only:
        con.read_only = True
        con.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    return con


@functools.cache
def _float_loader(psycopg: Any) -> type:
    """float8 as SQLite gives it back: -0.0 is 0.0 there (SQLite stores a whole REAL as
    an integer), so a sell closed at its entry price reads ``0.0`` on both engines."""
    from psycopg.types.numeric import FloatLoader

    class Float(FloatLoader):
        def load(self, data: Any) -> float:
            return super().load(data) + 0.0

    return Float


@contextlib.contextmanager
def _postgres(url: str) -> Iterator[ReadConnection]:
    psycopg = psycopg_module()
    con = connect_postgres(url, read_only=True)
    try:
        yield ReadConnection(con, POSTGRES)
    except psycopg.errors.UndefinedTable as exc:
        raise QueryError(
            f"{mask_url(url)} is not a tradescribe database (or not migrated yet): "
            f"{str(exc).splitlines()[0]}; run `tradescribe db migrate --db URL` or start "
            "the worker on it once"
        ) from None
    except psycopg.OperationalError as exc:
        raise QueryError(f"cannot read {mask_url(url)}: {str(exc).strip()}") from None
    finally:
        con.close()
