"""The read side over the request channel: the ``query`` and ``wait`` commands.

Both read the worker's own database (the SQLite file, or its PostgreSQL URL) through
``contracts.query``, read-only; a request names a query from its registry and
gives filter values, never SQL or a path. The blocking reads run in threads
(at most :data:`MAX_THREADS` at once), and a wait is cut into short slices so a
stopping worker is never held up by a waiting client.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field

from contracts.events import EventId
from contracts.query import (
    DeadLetteredError,
    QueryError,
    parse_filters,
    run_query,
    wait_for_event,
)
from contracts.query_model import Name
from worker.consume import Worker
from worker.ops.responder import RequestError, command

MAX_WAIT_S = 30.0
MAX_THREADS = 8
SLICE_S = 0.5
WAIT_KEYS = ("wait_for", "wait_timeout_s")

_limiter: anyio.CapacityLimiter | None = None


def _threads() -> anyio.CapacityLimiter:
    global _limiter
    if _limiter is None:
        _limiter = anyio.CapacityLimiter(MAX_THREADS)
    return _limiter


class Scope(BaseModel):
    """``{"accounts": ["ACC-1"], "sources": ["bot-a"]}``: only these accounts (and of
    them only these sources; none: all their sources). It narrows, never widens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    accounts: tuple[Name, ...] = Field(min_length=1, max_length=100)
    sources: tuple[Name, ...] = Field((), max_length=100)


class QueryArgs(BaseModel):
    """``{"name": "active-trades", "filters": {...}, "wait_for": id, "wait_timeout_s": 5,
    "scope": {"accounts": [...], "sources": [...]}}``"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9-]*$")
    filters: dict[str, str | int | float | bool | None] = Field(default_factory=dict, max_length=32)
    wait_for: EventId | None = None
    wait_timeout_s: float = Field(5.0, gt=0, le=MAX_WAIT_S)
    scope: Scope | None = None


class WaitArgs(BaseModel):
    """``{"event_id": id, "timeout_s": 5}``"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: EventId
    timeout_s: float = Field(5.0, ge=0, le=MAX_WAIT_S)


async def wait_committed(worker: Worker, event_id: str, timeout_s: float) -> bool:
    """Poll the database until ``event_id`` is committed; False after ``timeout_s``.

    Raises ``DeadLetteredError`` when the event was dead-lettered instead.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        left = max(0.0, deadline - time.monotonic())
        step = min(left, SLICE_S)
        found = await anyio.to_thread.run_sync(
            wait_for_event, _database(worker), event_id, step, limiter=_threads()
        )
        if found:
            return True
        if left <= SLICE_S:
            return False
        await anyio.lowlevel.checkpoint()  # a cancellation point between slices


@command("wait", WaitArgs)
async def wait(worker: Worker, args: WaitArgs) -> dict[str, Any]:
    """Is ``event_id`` committed (waiting up to ``timeout_s``), or dead-lettered and why?"""
    started = time.monotonic()
    reason = None
    try:
        committed = await wait_committed(worker, args.event_id, args.timeout_s)
    except DeadLetteredError as exc:
        committed, reason = False, exc.reason
    except QueryError as exc:
        raise RequestError("unavailable", str(exc)) from None
    return {
        "event_id": args.event_id,
        "committed": committed,
        "dead_lettered": reason is not None,
        "reason": reason,
        "waited_s": round(time.monotonic() - started, 3),
    }


def _database(worker: Worker) -> Path | str:
    """What the worker writes to: its SQLite file, or its PostgreSQL URL."""
    return worker.settings.database_url or worker.settings.db


def _split_wait(args: QueryArgs) -> tuple[dict[str, Any], str | None, float]:
    """Filters without the wait keys, and the wait (given at top level or in filters)."""
    filters = {k: v for k, v in args.filters.items() if k not in WAIT_KEYS}
    wait_for, timeout_s = args.wait_for, args.wait_timeout_s
    inner = args.filters.get("wait_for")
    if inner is not None:
        if wait_for is not None and inner != wait_for:
            raise RequestError("bad_args", "wait_for is given twice with different ids")
        wait_for = WaitArgs(event_id=inner).event_id if isinstance(inner, str) else None
        if wait_for is None:
            raise RequestError("bad_args", "filters.wait_for: must be an event id")
    inner_timeout = args.filters.get("wait_timeout_s")
    if inner_timeout is not None:
        if isinstance(inner_timeout, bool) or not isinstance(inner_timeout, int | float):
            raise RequestError("bad_args", "filters.wait_timeout_s: must be a number")
        if not 0 < inner_timeout <= MAX_WAIT_S:
            raise RequestError(
                "bad_args", f"filters.wait_timeout_s: must be > 0 and <= {MAX_WAIT_S:g}"
            )
        timeout_s = float(inner_timeout)
    return filters, wait_for, timeout_s


@command("query", QueryArgs)
async def query(worker: Worker, args: QueryArgs) -> dict[str, Any]:
    """Run one named query on the worker's database: ``QueryResult.as_dict()``."""
    filters, wait_for, timeout_s = _split_wait(args)
    try:
        parse_filters(args.name, filters)  # a bad name or filter is the caller's mistake
    except QueryError as exc:
        raise RequestError("bad_args", str(exc)) from None
    if wait_for is not None:
        try:
            committed = await wait_committed(worker, wait_for, timeout_s)
        except DeadLetteredError as exc:
            raise RequestError("dead_lettered", str(exc)) from None
        except QueryError as exc:
            raise RequestError("unavailable", str(exc)) from None
        if not committed:
            raise RequestError(
                "wait_timeout",
                f"event {wait_for} was not committed within {timeout_s:g}s; "
                "is the worker reading the stream the bot publishes to?",
            )
    db = _database(worker)
    try:
        if args.scope is not None:  # in SQL, by the function `serve` calls for a token
            from worker.http.answers import principal_of
            from worker.http.reads import run_scoped

            principal = principal_of(args.scope)
            return await anyio.to_thread.run_sync(
                lambda: run_scoped(db, principal, args.name, filters), limiter=_threads()
            )
        result = await anyio.to_thread.run_sync(
            lambda: run_query(db, args.name, filters), limiter=_threads()
        )
    except QueryError as exc:
        raise RequestError("unavailable", str(exc)) from None
    return result.as_dict()
