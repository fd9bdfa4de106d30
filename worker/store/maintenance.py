"""Schema version, migrations and rebuilding the projections from the event log."""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from contracts.errors import describe_validation_error
from worker.errors import DatabaseNewerError, WorkerError
from worker.store import aggregates
from worker.store.backup import copy_database, default_backup_dir, worker_stopped
from worker.store.schema import MIGRATIONS, SCHEMA_VERSION
from worker.store.sqlite import PROJECTION_TABLES, SqliteStore

_JSON_COLUMNS = {"attributes", "versions", "details", "tags"}


class MigrationFailedError(WorkerError):
    """A migration raised; its transaction was rolled back."""


class SchemaMismatchError(WorkerError):
    """The database's schema is not the one this tradescribe writes."""


def read_version(db: Path) -> int:
    """The schema version of ``db`` (0 if it does not exist yet), read-only."""
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(con.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        raise WorkerError(f"{db} is not an SQLite database ({exc}); fix --db") from exc
    finally:
        con.close()


def version_info(db: Path) -> dict[str, Any]:
    current = read_version(db)
    state = (
        "no such file yet: the worker creates it at start"
        if not db.exists()
        else "newer than this tradescribe"
        if current > SCHEMA_VERSION
        else "up to date"
        if current == SCHEMA_VERSION
        else f"{SCHEMA_VERSION - current} migration(s) pending"
    )
    return {
        "db": str(db),
        "exists": db.exists(),
        "version": current,
        "code_version": SCHEMA_VERSION,
        "state": state,
    }


def _newer(db: Path, current: int) -> DatabaseNewerError:
    return DatabaseNewerError(
        f"{db} has schema version {current}, newer than this tradescribe "
        f"({SCHEMA_VERSION}); upgrade tradescribe"
    )


def plan(current: int) -> list[dict[str, Any]]:
    return [
        {
            "version": v,
            "statements": len(MIGRATIONS[v - 1]),
            "first": MIGRATIONS[v - 1][0].splitlines()[0] if MIGRATIONS[v - 1] else "",
        }
        for v in range(current + 1, SCHEMA_VERSION + 1)
    ]


async def migrate(db: Path, *, dry_run: bool, backup_dir: Path | None) -> dict[str, Any]:
    """Run the pending migrations (worker stopped), after a backup; or only list them."""
    current = read_version(db)
    if current > SCHEMA_VERSION:
        raise _newer(db, current)
    result: dict[str, Any] = {
        "db": str(db),
        "before": current,
        "after": current,
        "pending": plan(current),
        "dry_run": dry_run,
        "backup": None,
    }
    if dry_run:
        return result
    with worker_stopped(db, "migrating"):
        store = await SqliteStore.open(db)
        try:
            before, after = await store.migrate(backup_dir=backup_dir or default_backup_dir(db))
        except sqlite3.Error as exc:
            now = await store.schema_version()
            raise MigrationFailedError(
                f"migration {now + 1} of {db} failed and was rolled back ({exc}); the database "
                f"stays at version {now}; a backup was taken first: {store.migration_backup}"
            ) from exc
        finally:
            await store.close()
    result.update(before=before, after=after, backup=store.migration_backup)
    return result


async def rebuild(db: Path, *, lock: bool = True) -> dict[str, Any]:
    """Recompute every projection from ``events`` in place (the worker must be stopped)."""
    if not db.is_file():
        raise WorkerError(f"{db} does not exist (fix --db)")
    current = read_version(db)
    if current > SCHEMA_VERSION:
        raise _newer(db, current)
    if current < SCHEMA_VERSION:
        raise SchemaMismatchError(
            f"{db} has schema version {current}; run `tradescribe db migrate --db {db}` first"
        )

    async def run() -> int:
        store = await SqliteStore.open(db)
        try:
            return await store.rebuild_projections()
        except ValidationError as exc:
            raise WorkerError(
                f"an event in {db} does not validate with this tradescribe "
                f"({describe_validation_error(exc)}); nothing was changed"
            ) from exc
        finally:
            await store.close()

    if lock:
        with worker_stopped(db, "rebuilding the projections"):
            replayed = await run()
    else:
        replayed = await run()
    return {"db": str(db), "events_replayed": replayed, "tables": table_counts(db)}


def table_counts(db: Path) -> dict[str, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {
            t: int(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
            for t in PROJECTION_TABLES
        }
    finally:
        con.close()


async def rebuild_check(db: Path) -> dict[str, Any]:
    """Rebuild a snapshot's projections in a temporary copy and compare them with the
    snapshot's own tables. Safe while the worker runs (it reads one consistent copy)."""
    if not db.is_file():
        raise WorkerError(f"{db} does not exist (fix --db)")
    with tempfile.TemporaryDirectory(prefix="tradescribe-check-") as tmp:
        live = Path(tmp) / "live.db"
        rebuilt = Path(tmp) / "rebuilt.db"
        copy_database(db, live)
        copy_database(live, rebuilt)
        result = await rebuild(rebuilt, lock=False)
        tables = {t: compare_table(live, rebuilt, t) for t in (*PROJECTION_TABLES, *_AGGREGATES)}
    same = all(t["missing"] == 0 and t["extra"] == 0 for t in tables.values())
    return {
        "db": str(db),
        "events_replayed": result["events_replayed"],
        "equal": same,
        "tables": tables,
    }


# Kept by the worker as running sums; a rebuild sums them afresh. Buckets emptied by a
# reopened trade stay behind as rows of 0 trades, and float sums may differ in their
# last bits: compared without the empty rows, to the millionth.
_AGGREGATES = tuple(a.table for a in aggregates.AGGREGATES)


def _rows(db: Path, table: str) -> Counter[tuple[Any, ...]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    aggregate = table in _AGGREGATES
    try:
        cur = con.execute(f"SELECT * FROM {table}" + (" WHERE trades > 0" if aggregate else ""))
        names = [d[0] for d in cur.description]
        rows: Counter[tuple[Any, ...]] = Counter()
        for row in cur:
            values = (_normal(n, v) for n, v in zip(names, row, strict=True))
            if aggregate:
                values = (round(v, 6) if isinstance(v, float) else v for v in values)
            rows[tuple(values)] += 1
        return rows
    finally:
        con.close()


def _normal(name: str, value: Any) -> Any:
    """JSON columns compared by meaning (key order is not part of the data)."""
    if name in _JSON_COLUMNS and isinstance(value, str):
        try:
            return json.dumps(json.loads(value), sort_keys=True)
        except ValueError:
            return value
    return value


def compare_table(live: Path, rebuilt: Path, table: str) -> dict[str, int]:
    a, b = _rows(live, table), _rows(rebuilt, table)
    return {
        "live": sum(a.values()),
        "rebuilt": sum(b.values()),
        "missing": sum((a - b).values()),
        "extra": sum((b - a).values()),
    }
