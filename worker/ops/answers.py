"""The dashboard's answers over the request channel, for ``serve --remote`` on
another host: ``dashboard``, ``bots``, ``health``, ``dead-letters``, ``seed``,
``events`` and ``seq``.

Each calls the same function ``serve`` calls on a database of its own host
(``worker.http.answers.LocalAnswers``), on the worker's database (its SQLite file
or its PostgreSQL), read-only. A
request may carry a ``scope`` (accounts, and optionally sources): the answer is
then narrowed to it in SQL, exactly as for a token of ``serve``. A scope only
ever narrows: without one a request sees everything, as ``query`` always could.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field

from contracts.query import QueryError
from worker.consume import Worker
from worker.http.answers import LocalAnswers, principal_of
from worker.http.seed import ROUTES
from worker.ops.queries import Scope, _database, _threads
from worker.ops.responder import RequestError, command

Params = dict[str, str | int | float | bool | None]


class Scoped(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scope: Scope | None = None
    params: Params = Field(default_factory=dict, max_length=32)


class SeedArgs(Scoped):
    route: str = Field(pattern=r"^[a-z][a-z0-9-]{0,63}$")


class EventsArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scope: Scope | None = None
    after: int = Field(ge=0)
    upto: int = Field(ge=0)


class DeadLetterArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int = Field(100, ge=1, le=1000)


async def _read(worker: Worker, fn: Any, *args: Any, quick: bool = False) -> Any:
    """``fn(LocalAnswers(worker's database), *args)`` in a thread; a query layer's
    complaint (bad filter, no file yet) becomes an error reply. ``quick`` reads do
    not queue behind the slow ones' threads."""
    local = LocalAnswers(_database(worker))
    limiter = None if quick else _threads()
    try:
        return await anyio.to_thread.run_sync(lambda: fn(local, *args), limiter=limiter)
    except QueryError as exc:
        unreachable = ("does not exist", "cannot connect", "cannot read")
        code = "unavailable" if any(m in str(exc) for m in unreachable) else "bad_args"
        raise RequestError(code, str(exc)) from None


@command("dashboard", Scoped)
async def dashboard(worker: Worker, args: Scoped) -> dict[str, Any]:
    """The parts of the dashboard page's answer that change only with commits
    (``GET /api/v1/dashboard`` adds the clock-bound part: ``health`` and the time)."""
    found: dict[str, Any] = await _read(
        worker, LocalAnswers.dashboard_data, principal_of(args.scope), dict(args.params)
    )
    return found


@command("bots", Scoped)
async def bots(worker: Worker, args: Scoped) -> dict[str, Any]:
    """The bot comparison table (``GET /api/v1/bots``)."""
    rows = await _read(worker, LocalAnswers.bots, principal_of(args.scope), dict(args.params))
    return {"rows": rows}


@command("health", Scoped)
async def health(worker: Worker, args: Scoped) -> dict[str, Any]:
    """The health strip (``GET /api/v1/health`` without the pipeline)."""
    found: dict[str, Any] = await _read(worker, LocalAnswers.health, principal_of(args.scope))
    return found


@command("dead-letters", DeadLetterArgs)
async def dead_letters(worker: Worker, args: DeadLetterArgs) -> dict[str, Any]:
    """The latest dead letters, newest first."""
    return {"rows": await _read(worker, LocalAnswers.dead_letters, args.limit)}


@command("seed", SeedArgs)
async def seed_route(worker: Worker, args: SeedArgs) -> dict[str, Any]:
    """One of seed 002's four routes (``GET /api/<route>``)."""
    if args.route not in ROUTES:
        raise RequestError("bad_args", f"unknown route {args.route!r}; one of {', '.join(ROUTES)}")
    principal = principal_of(args.scope)
    value = await _read(worker, LocalAnswers.seed, principal, args.route, dict(args.params))
    return {"value": value}


@command("events", EventsArgs)
async def events(worker: Worker, args: EventsArgs) -> dict[str, Any]:
    """Committed events with ``after < seq <= upto`` in scope, at most 1000 (the live
    stream's rows)."""
    principal = principal_of(args.scope)
    return {"rows": await _read(worker, LocalAnswers.events_since, principal, args.after,
                                args.upto)}  # fmt: skip


@dataclass
class _Seen:
    committed: int = -1
    seq: int = 0


_seen: weakref.WeakKeyDictionary[Worker, _Seen] = weakref.WeakKeyDictionary()


@command("seq", quick=True)
async def seq(worker: Worker, args: BaseModel) -> dict[str, Any]:
    """The last committed ``seq``: what a remote ``serve`` polls to learn of commits.

    Read from the database only when the worker has committed new events since the last
    ask (its in-memory counter moved), so polling an idle worker reads nothing."""
    seen = _seen.setdefault(worker, _Seen())
    committed = worker.stats.committed
    if committed != seen.committed:
        value = await _read(worker, LocalAnswers.max_seq, quick=True)
        seen.committed, seen.seq = committed, int(value)
    return {"seq": seen.seq}
