"""The read side: named queries over the SQLite file (read-only, on the same host) or
over PostgreSQL (a ``postgresql://`` URL; needs the ``[postgres]`` extra).

    >>> from contracts.query import Reader, run_query
    >>> Reader("tradescribe.db").active_trades(source="bot-1")        # doctest: +SKIP
    [{'source': 'bot-1', 'trade_id': 'T1', 'symbol': 'BTCUSDT', ...}]
    >>> run_query("tradescribe.db", "pnl", {"tz": "Europe/Berlin"}).as_dict()  # doctest: +SKIP

``run_query(db, name, filters)`` is the one entry point: a name from
:data:`QUERIES`, a plain dict of filters, and a JSON-ready :class:`QueryResult`.
The request channel's ``query`` command calls the same function.

On SQLite it needs only the standard library's sqlite3 and pydantic; never writes.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from contracts.errors import describe_validation_error
from contracts.query_db import ReadConnection, connect_readonly, is_url
from contracts.query_model import DeadLetteredError, Filters, QueryError, QueryResult
from contracts.query_sql import QUERIES, QuerySpec

__all__ = [
    "QUERIES",
    "DeadLetteredError",
    "Filters",
    "QueryError",
    "QueryResult",
    "QuerySpec",
    "Reader",
    "connect_readonly",
    "parse_filters",
    "run_query",
    "wait_for_event",
]

POLL_S = 0.01


def parse_filters(name: str, filters: dict[str, Any] | None) -> tuple[QuerySpec, Filters]:
    """The query's spec and its validated filters; a clear ``QueryError`` otherwise."""
    spec = QUERIES.get(name)
    if spec is None:
        raise QueryError(f"unknown query {name!r}; choose one of: {', '.join(QUERIES)}")
    given = {k: v for k, v in (filters or {}).items() if v is not None}
    unknown = sorted(set(given) - set(spec.filters))
    if unknown:
        raise QueryError(
            f"query {name!r} does not take {', '.join(unknown)}; "
            f"it takes: {', '.join(spec.filters)}"
        )
    try:
        return spec, Filters.model_validate(given)
    except ValidationError as exc:
        raise QueryError(f"bad filter for {name!r}: {describe_validation_error(exc)}") from None


def _committed(con: ReadConnection, event_id: str) -> bool:
    if con.execute("SELECT 1 FROM events WHERE event_id = ?", (event_id,)).fetchone():
        return True
    dead = con.execute(
        "SELECT reason FROM dead_letters WHERE event_id = ? ORDER BY id DESC LIMIT 1", (event_id,)
    ).fetchone()
    if dead:
        raise DeadLetteredError(event_id, str(dead[0]))
    return False


def wait_for_event(db: str | Path, event_id: str, timeout_s: float = 5.0) -> bool:
    """Block until the worker has committed ``event_id``; False after ``timeout_s``.

    Raises ``DeadLetteredError`` (a ``QueryError``) if the event was dead-lettered:
    it will never be committed.
    """
    deadline = time.monotonic() + timeout_s
    with connect_readonly(db) as con:
        while True:
            if _committed(con, event_id):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)
            con.renew()


def run_query(
    db: str | Path,
    name: str,
    filters: dict[str, Any] | None = None,
    *,
    now: dt.datetime | None = None,
) -> QueryResult:
    """Run one named query; ``filters`` is a plain dict, the result is JSON-ready.

    With ``wait_for`` (an event id) it first waits until that event is committed,
    so a bot sees its own writes; it raises ``QueryError`` after ``wait_timeout_s``.
    """
    spec, parsed = parse_filters(name, filters)
    if parsed.wait_for and not wait_for_event(db, parsed.wait_for, parsed.wait_timeout_s):
        raise QueryError(
            f"event {parsed.wait_for} was not committed within {parsed.wait_timeout_s:g}s; "
            "is the worker running and reading this stream?"
        )
    with connect_readonly(db) as con:
        return spec.run(con, parsed, now or dt.datetime.now(dt.UTC))


class Reader:
    """What a bot restoring its state after a restart calls (read-only, same host)."""

    def __init__(self, db: str | Path, **defaults: Any) -> None:
        """``defaults`` (e.g. ``source="bot-1"``) apply to every query."""
        self.db: str | Path = db if is_url(db) else Path(db)
        self.defaults = defaults

    def query(self, name: str, **filters: Any) -> QueryResult:
        return run_query(self.db, name, {**self.defaults, **filters})

    def active_trades(self, **filters: Any) -> list[dict[str, Any]]:
        return self.query("active-trades", **filters).rows

    def active_signals(self, **filters: Any) -> list[dict[str, Any]]:
        return self.query("active-signals", **filters).rows

    def positions(self, **filters: Any) -> list[dict[str, Any]]:
        return self.query("positions", **filters).rows

    def closed_today(self, **filters: Any) -> list[dict[str, Any]]:
        return self.query("closed-today", **filters).rows

    def journal(self, **filters: Any) -> list[dict[str, Any]]:
        return self.query("journal", **filters).rows

    def daily_loss(self, **filters: Any) -> dict[str, Any]:
        summary = self.query("daily-loss", **filters).summary
        return summary or {}

    def wait_for(self, event_id: str, timeout_s: float = 5.0) -> bool:
        return wait_for_event(self.db, event_id, timeout_s)
