"""``tradescribe db version / migrate / rebuild [--check]`` on a PostgreSQL URL.

The same answers as :mod:`worker.store.maintenance` gives for a file. A rebuild takes
the database's writer lock (it refuses while a worker runs); a check replays the log
inside one transaction, compares, and rolls it back, so it changes nothing (while it
runs it holds the worker's next commit back: the projections' rows are locked).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import asyncpg

from contracts.redisurl import mask_url
from worker.store import pgsql
from worker.store.aggregates import AGGREGATES
from worker.store.postgres import PROJECTION_TABLES, PostgresStore, replay
from worker.store.rows import ENTITY_BY_TABLE

_AGGREGATES = tuple(a.table for a in AGGREGATES)
_JSON_COLUMNS = {"attributes", "versions", "tags", "details"}


def _state(version: int) -> str:
    if version == pgsql.SCHEMA_VERSION:
        return "up to date"
    if version > pgsql.SCHEMA_VERSION:
        return "newer than this tradescribe: upgrade it"
    return f"{pgsql.SCHEMA_VERSION - version} migration(s) pending: tradescribe db migrate"


async def version_info(url: str) -> dict[str, Any]:
    store = await PostgresStore.open(url)
    try:
        version = await store.schema_version()
    finally:
        await store.close()
    return {
        "db": mask_url(url),
        "version": version,
        "code_version": pgsql.SCHEMA_VERSION,
        "state": _state(version),
    }


async def migrate(url: str, *, dry_run: bool) -> dict[str, Any]:
    store = await PostgresStore.open(url)
    try:
        before = await store.schema_version()
        pending = [
            {"version": v, "statements": 1} for v in range(before + 1, pgsql.SCHEMA_VERSION + 1)
        ]
        if not dry_run:
            from worker.lease import worker_identity

            await store.lock_writer(worker_identity("tradescribe db migrate"))
        after = before if dry_run else (await store.migrate())[1]
        await store.unlock_writer()
    finally:
        await store.close()
    return {"db": mask_url(url), "before": before, "after": after, "pending": pending,
            "backup": None}  # fmt: skip


async def rebuild(url: str) -> dict[str, Any]:
    from worker.lease import worker_identity

    store = await PostgresStore.open(url)
    try:
        await store.lock_writer(worker_identity("tradescribe db rebuild"))
        replayed = await store.rebuild_projections()
        tables = {
            t: int(await store.scalar(f"SELECT count(*) FROM {t}")) for t in PROJECTION_TABLES
        }
        await store.unlock_writer()
    finally:
        await store.close()
    return {"db": mask_url(url), "events_replayed": replayed, "tables": tables}


async def rebuild_check(url: str) -> dict[str, Any]:
    """Replay the log inside a transaction that is rolled back; compare with what was."""
    con = await asyncpg.connect(url)
    try:
        tr = con.transaction(isolation="repeatable_read")
        await tr.start()
        try:
            names = (*PROJECTION_TABLES, *_AGGREGATES)
            live = {t: await _rows(con, t) for t in names}
            replayed = await replay(con, 1000)
            rebuilt = {t: await _rows(con, t) for t in names}
        finally:
            await tr.rollback()
    finally:
        await con.close()
    tables = {
        t: {
            "live": sum(live[t].values()),
            "rebuilt": sum(rebuilt[t].values()),
            "missing": sum((live[t] - rebuilt[t]).values()),
            "extra": sum((rebuilt[t] - live[t]).values()),
        }
        for t in live
    }
    same = all(t["missing"] == 0 and t["extra"] == 0 for t in tables.values())
    return {"db": mask_url(url), "events_replayed": replayed, "equal": same, "tables": tables}


async def _rows(con: asyncpg.Connection, table: str) -> Counter[tuple[Any, ...]]:
    """A table's rows, JSON by meaning; aggregates without empty buckets, to the
    millionth (running float sums against fresh ones), as the SQLite check compares."""
    aggregate = table in _AGGREGATES
    where = " WHERE trades > 0" if aggregate else ""
    rows: Counter[tuple[Any, ...]] = Counter()
    for record in await con.fetch(f"SELECT * FROM {table}{where}"):
        values = []
        for name, value in record.items():
            if name in _JSON_COLUMNS and isinstance(value, str):
                value = json.dumps(json.loads(value), sort_keys=True)
            elif aggregate and isinstance(value, float):
                value = round(value, 6)
            values.append(value)
        rows[tuple(values)] += 1
    return rows


__all__ = ["ENTITY_BY_TABLE", "migrate", "rebuild", "rebuild_check", "version_info"]
