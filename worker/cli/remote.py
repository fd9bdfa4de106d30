"""``tradescribe query --redis-url``: the same queries, answered by the running worker.

The worker runs them on its own database (``query`` command of the request
channel); this side only sends the name and the filters and prints the reply
exactly as the ``--db`` door prints a local result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from contracts.client import Client
from contracts.errors import NoWorkerError, RedisUnreachableError, RequestFailedError
from contracts.query import QueryError
from worker.ops.trust import client_key
from worker.settings import load_settings

EXIT_NO_WORKER = 2  # the same codes and wording as `tradescribe status`
EXIT_NO_REDIS = 3


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
        with Client(
            s.redis_url,
            stream=s.stream,
            group=s.group,
            timeout_s=timeout_s,
            connect_timeout_s=timeout_s,
            channel_key=client_key(s),
        ) as client:
            return client.query(name, rest, **wait)
    except NoWorkerError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(EXIT_NO_WORKER) from None
    except RedisUnreachableError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(EXIT_NO_REDIS) from None
    except RequestFailedError as exc:
        raise QueryError(f"the worker refused the query: {exc.message}") from None
