"""``tradescribe query --redis-url``: the same queries, answered by the running worker.

The worker runs them on its own database (``query`` command of the request
channel); this side only sends the name and the filters and prints the reply
exactly as the ``--db`` door prints a local result.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from contracts.client import Client
from contracts.errors import NoWorkerError, RedisUnreachableError, RequestFailedError
from contracts.query import QueryError
from worker.errors import EXIT_NO_REDIS, EXIT_NO_WORKER
from worker.ops.trust import client_key
from worker.settings import Settings, load_settings


def worker_client(s: Settings, timeout_s: float) -> Client:
    """A request-channel client that checks replies with this host's channel key."""
    return Client(
        s.redis_url,
        stream=s.stream,
        group=s.group,
        timeout_s=timeout_s,
        connect_timeout_s=timeout_s,
        channel_key=client_key(s),
    )


@contextmanager
def exits_unanswered() -> Iterator[None]:
    """No worker answered: one line and exit 2; Redis unreachable: one line and exit 3."""
    try:
        yield
    except NoWorkerError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(EXIT_NO_WORKER) from None
    except RedisUnreachableError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(EXIT_NO_REDIS) from None


def fetch_remote(
    name: str,
    filters: dict[str, Any],
    *,
    config: Path | None,
    redis_url: str,
    stream: str | None,
    group: str | None,
    timeout_s: float,
) -> dict[str, Any]:
    """One query's result from the worker, or exit 2 (no worker) / 3 (no Redis)."""
    s = load_settings(config, redis_url=redis_url, stream=stream, group=group)
    rest = {k: v for k, v in filters.items() if k not in ("wait_for", "wait_timeout_s")}
    wait: dict[str, Any] = {}
    if filters.get("wait_for") is not None:
        wait = {"wait_for": filters["wait_for"]}
        if filters.get("wait_timeout_s") is not None:
            wait["wait_timeout_s"] = filters["wait_timeout_s"]
    try:
        with exits_unanswered(), worker_client(s, timeout_s) as client:
            return client.query(name, rest, **wait)
    except RequestFailedError as exc:
        raise QueryError(f"the worker refused the query: {exc.message}") from None
