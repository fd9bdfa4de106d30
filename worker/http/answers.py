"""Where ``serve``'s answers come from: the database this host reads (the SQLite file,
or PostgreSQL by URL), or the worker over the request channel. One implementation of
each answer, two transports.

:class:`LocalAnswers` calls the read functions (``reads``, ``seed``) on the database.
:class:`RemoteAnswers` sends the token's scope and the same parameters to the
worker, whose commands (``worker/ops/answers.py``) call those very functions on
its own database; the replies are signed with the channel key and checked by
``contracts.client.Client``. The server's routes only ever see an ``Answers``.

Every method blocks (the server runs them in threads).
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Any, Protocol

from contracts.client import Client
from contracts.errors import (
    ForgedReplyError,
    NoWorkerError,
    RedisUnreachableError,
    RequestFailedError,
    TradescribeError,
)
from contracts.query import QueryError
from worker.http import reads, seed
from worker.http.tokens import Principal

# How many requests this server has in hand at the worker at once: the worker answers
# "busy" to a client with more than 8 (worker/ops/responder.py MAX_PER_CLIENT).
IN_FLIGHT = 8
CALLER_ERRORS = ("bad_args", "wait_timeout", "dead_lettered")


class Unavailable(TradescribeError):
    """The answer cannot be had now (no worker, Redis down, a forged reply): HTTP 503."""


class Answers(Protocol):
    def query(self, p: Principal, name: str, params: dict[str, Any]) -> dict[str, Any]: ...
    def seed(self, p: Principal, name: str, params: dict[str, Any]) -> Any: ...
    def dashboard_data(self, p: Principal, params: dict[str, Any]) -> dict[str, Any]: ...
    def dashboard_live(self, p: Principal) -> dict[str, Any]: ...
    def bots(self, p: Principal, params: dict[str, Any]) -> list[dict[str, Any]]: ...
    def health(self, p: Principal) -> dict[str, Any]: ...
    def dead_letters(self, limit: int) -> list[dict[str, Any]]: ...
    def events_since(self, p: Principal, after: int, upto: int) -> list[dict[str, Any]]: ...
    def max_seq(self) -> int: ...


class LocalAnswers:
    """The database this host reads (the SQLite file, or a PostgreSQL URL), read-only
    through the query layer."""

    def __init__(self, db: Path | str) -> None:
        self.db = db

    def query(self, p: Principal, name: str, params: dict[str, Any]) -> dict[str, Any]:
        return reads.run_scoped(self.db, p, name, params)

    def seed(self, p: Principal, name: str, params: dict[str, Any]) -> Any:
        return seed.ROUTES[name](self.db, p, params)

    def dashboard_data(self, p: Principal, params: dict[str, Any]) -> dict[str, Any]:
        return seed.dashboard_data(self.db, p, params)

    def dashboard_live(self, p: Principal) -> dict[str, Any]:
        return seed.dashboard_live(self.db, p)

    def bots(self, p: Principal, params: dict[str, Any]) -> list[dict[str, Any]]:
        return reads.bots(self.db, p, params)

    def health(self, p: Principal) -> dict[str, Any]:
        return reads.health(self.db, p)

    def dead_letters(self, limit: int) -> list[dict[str, Any]]:
        return reads.dead_letters(self.db, limit)

    def events_since(self, p: Principal, after: int, upto: int) -> list[dict[str, Any]]:
        return reads.events_since(self.db, p, after, upto)

    def max_seq(self) -> int:
        return reads.max_seq(self.db)


def scope_of(p: Principal) -> dict[str, list[str]] | None:
    """What goes on the channel: the token's accounts and sources; None for an admin
    (all of it, which any channel client may read)."""
    if p.admin:
        return None
    return {"accounts": list(p.accounts), "sources": list(p.sources)}


def principal_of(scope: Any) -> Principal:
    """The worker's side: a principal that sees exactly ``scope`` (None: everything)."""
    if scope is None:
        return Principal("channel", "channel", (), (), publish=False, admin=True)
    return Principal("channel", "channel", tuple(scope.accounts), tuple(scope.sources),
                     publish=False, admin=False)  # fmt: skip


class RemoteAnswers:
    """The worker on another host, over the request channel (replies verified)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._slots = threading.BoundedSemaphore(IN_FLIGHT)

    def ask(self, command: str, args: dict[str, Any], timeout_s: float | None = None) -> Any:
        with self._slots:
            try:
                return self.client.request(command, args, timeout_s=timeout_s)
            except RequestFailedError as exc:
                if exc.code in CALLER_ERRORS:
                    raise QueryError(exc.message) from None
                raise Unavailable(f"the worker answered {exc.code}: {exc.message}") from None
            except (NoWorkerError, RedisUnreachableError, ForgedReplyError) as exc:
                raise Unavailable(str(exc)) from None

    def query(self, p: Principal, name: str, params: dict[str, Any]) -> dict[str, Any]:
        _, f = reads.scoped(p, name, params)  # a bad filter answers 400 here, as locally
        args: dict[str, Any] = {"name": name, "filters": params, "scope": scope_of(p)}
        waited = f.wait_timeout_s if f.wait_for else 0.0
        found = self.ask("query", args, self.client.timeout_s + waited)
        return reads.clean(found)  # type: ignore[no-any-return]

    def seed(self, p: Principal, name: str, params: dict[str, Any]) -> Any:
        args = {"route": name, "params": params, "scope": scope_of(p)}
        return self.ask("seed", args)["value"]

    def dashboard_data(self, p: Principal, params: dict[str, Any]) -> dict[str, Any]:
        found: dict[str, Any] = self.ask("dashboard", {"params": params, "scope": scope_of(p)})
        return found

    def dashboard_live(self, p: Principal) -> dict[str, Any]:
        # the worker knows a scope, not a token: who is asking is said here
        return {"whoami": reads.clean(p.as_dict()), "now": dt.datetime.now(dt.UTC).isoformat(),
                "health": self.health(p)}  # fmt: skip

    def bots(self, p: Principal, params: dict[str, Any]) -> list[dict[str, Any]]:
        found = self.ask("bots", {"params": params, "scope": scope_of(p)})
        return found["rows"]  # type: ignore[no-any-return]

    def health(self, p: Principal) -> dict[str, Any]:
        return self.ask("health", {"scope": scope_of(p)})  # type: ignore[no-any-return]

    def dead_letters(self, limit: int) -> list[dict[str, Any]]:
        return self.ask("dead-letters", {"limit": limit})["rows"]  # type: ignore[no-any-return]

    def events_since(self, p: Principal, after: int, upto: int) -> list[dict[str, Any]]:
        args = {"after": after, "upto": upto, "scope": scope_of(p)}
        return self.ask("events", args)["rows"]  # type: ignore[no-any-return]

    def max_seq(self) -> int:
        return int(self.ask("seq", {})["seq"])

    def close(self) -> None:
        self.client.close()
