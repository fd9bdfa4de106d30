"""Backups: an online, consistent copy with SQLite's backup API, and restore.

The copy is taken in one step under a read transaction, so it is the database
as of one commit while the worker keeps writing (WAL readers do not block the
writer). Beside each copy, ``<copy>.json`` records the last committed stream id
(meta key ``last_stream_id``) read from the copy itself, its schema version and
event count. Copies are checked with ``PRAGMA integrity_check`` and created
mode 0600; the newest ``keep`` scheduled copies are kept.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import anyio

from worker.errors import AlreadyRunningError, WorkerError
from worker.lease import FileLock, describe_holder, worker_identity
from worker.settings import Settings
from worker.store.dbpath import create_private_file

log = logging.getLogger(__name__)


class BackupError(WorkerError):
    """A backup or restore cannot be done; the message says why and what to do."""


class WorkerRunningError(WorkerError):
    """A worker holds the database's lock while a command needs it stopped."""


def default_backup_dir(db: Path) -> Path:
    return db.parent / "backups"


@dataclass
class BackupResult:
    path: str
    meta: str
    created_at: str
    source_db: str
    last_stream_id: str | None
    schema_version: int
    events: int
    bytes: int
    seconds: float
    integrity: str = "ok"
    removed: list[str] = field(default_factory=list)


@contextmanager
def worker_stopped(db: Path, purpose: str) -> Iterator[None]:
    """Hold the worker's file lock for ``purpose``; refuse if a worker holds it."""
    lock = FileLock(db, worker_identity(f"tradescribe {purpose}"))
    try:
        lock.acquire()
    except AlreadyRunningError:
        holder = describe_holder(lock.path.read_bytes() if lock.path.exists() else None)
        raise WorkerRunningError(
            f"a worker ({holder}) is running on {db}; stop it before {purpose} "
            "(e.g. systemctl stop tradescribe), then run this again"
        ) from None
    try:
        yield
    finally:
        lock.release()


def integrity_check(path: Path) -> str:
    """``ok``, or the first problems ``PRAGMA integrity_check`` reports."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = [r[0] for r in con.execute("PRAGMA integrity_check(5)")]
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return "ok" if rows == ["ok"] else "; ".join(str(r) for r in rows)


def copy_database(src: Path, dest: Path) -> None:
    """Copy ``src`` to a new single file ``dest`` (mode 0600) with the backup API."""
    create_private_file(dest)
    source = sqlite3.connect(src, timeout=30)
    try:
        target = sqlite3.connect(dest)
        try:
            source.backup(target)  # all pages in one step: one consistent snapshot
            target.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        finally:
            target.close()
    finally:
        source.close()


def _facts(path: Path) -> tuple[str | None, int, int]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        version = int(con.execute("PRAGMA user_version").fetchone()[0])
        try:
            row = con.execute("SELECT value FROM meta WHERE key = 'last_stream_id'").fetchone()
            events = int(con.execute("SELECT count(*) FROM events").fetchone()[0])
        except sqlite3.OperationalError:
            return None, version, 0
        return (row[0] if row else None), version, events
    finally:
        con.close()


def take_backup(db: Path, to_dir: Path, keep: int = 0, label: str = "") -> BackupResult:
    """Back ``db`` up into ``to_dir``; keep the newest ``keep`` copies (0: keep all)."""
    if not db.is_file():
        raise BackupError(f"{db} does not exist (fix --db)")
    started = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    name = f"{db.stem}-{label}{now:%Y%m%dT%H%M%S%f}Z.db"
    dest = to_dir / name
    try:
        to_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # copies of every trade: private
        copy_database(db, dest)
    except sqlite3.Error as exc:
        dest.unlink(missing_ok=True)
        raise BackupError(f"cannot back up {db}: {exc}") from exc
    except OSError as exc:
        raise BackupError(f"cannot write the backup into {to_dir}: {exc} (fix --to)") from exc
    integrity = integrity_check(dest)
    if integrity != "ok":
        dest.unlink(missing_ok=True)
        raise BackupError(f"the copy of {db} failed its integrity check ({integrity})")
    last_id, version, events = _facts(dest)
    meta = dest.with_name(dest.name + ".json")
    result = BackupResult(
        path=str(dest),
        meta=str(meta),
        created_at=now.isoformat(),
        source_db=str(db.resolve()),
        last_stream_id=last_id,
        schema_version=version,
        events=events,
        bytes=dest.stat().st_size,
        seconds=round(time.perf_counter() - started, 3),
    )
    _write_private(meta, json.dumps(asdict(result), indent=2) + "\n")
    if keep > 0 and not label:
        result.removed = [str(p) for p in prune(to_dir, db.stem, keep)]
    return result


def _write_private(path: Path, content: str) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(content)


def prune(to_dir: Path, stem: str, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` scheduled copies (labelled ones stay)."""
    pattern = re.compile(rf"^{re.escape(stem)}-\d{{8}}T\d{{12}}Z\.db$")
    copies = sorted(p for p in to_dir.iterdir() if pattern.match(p.name))
    removed = copies[:-keep] if keep > 0 else []
    for old in removed:
        old.unlink(missing_ok=True)
        old.with_name(old.name + ".json").unlink(missing_ok=True)
    return removed


def check_schema(file: Path, version: int) -> None:
    """Refuse a file whose schema is not exactly tradescribe's schema ``version``."""
    from worker.store.schema import schema_differences

    if version < 1:
        raise BackupError(
            f"{file} is not a tradescribe database (schema version {version}); nothing restored"
        )
    con = sqlite3.connect(f"file:{file}?mode=ro", uri=True)
    try:
        problems = schema_differences(con, version)
    finally:
        con.close()
    if problems:
        raise BackupError(
            f"{file} does not hold tradescribe's schema version {version} "
            f"({'; '.join(problems)}); nothing restored (give a copy made by "
            "`tradescribe backup`)"
        )


def restore(file: Path, db: Path, backup_dir: Path) -> dict[str, object]:
    """Replace ``db``'s content with ``file`` (worker stopped, copy checked first)."""
    from worker.store.schema import SCHEMA_VERSION

    if not file.is_file():
        raise BackupError(f"{file} does not exist (fix the FILE argument)")
    integrity = integrity_check(file)
    if integrity != "ok":
        raise BackupError(f"{file} failed its integrity check ({integrity}); nothing restored")
    last_id, version, events = _facts(file)
    if version > SCHEMA_VERSION:
        raise BackupError(
            f"{file} has schema version {version}, newer than this tradescribe "
            f"({SCHEMA_VERSION}); upgrade tradescribe first"
        )
    check_schema(file, version)
    with worker_stopped(db, "restoring"):
        safety = None
        if db.is_file() and db.stat().st_size > 0:
            safety = take_backup(db, backup_dir, label="pre-restore-").path
        create_private_file(db)
        source = sqlite3.connect(f"file:{file}?mode=ro", uri=True)
        try:
            target = sqlite3.connect(db, timeout=30)
            try:
                source.backup(target)
                target.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                target.close()
        finally:
            source.close()
    return {
        "restored": str(file),
        "db": str(db),
        "last_stream_id": last_id,
        "schema_version": version,
        "events": events,
        "previous_saved_as": safety,
    }


async def backup_periodically(settings: Settings) -> None:
    """The worker's scheduled backups (``backup_interval_s`` > 0); failures are logged."""
    interval = settings.backup_interval_s
    if interval <= 0:
        return
    to_dir = settings.backup_dir or default_backup_dir(settings.db)
    while True:
        await anyio.sleep(interval)
        try:
            result = await anyio.to_thread.run_sync(
                take_backup, settings.db, to_dir, settings.backup_keep
            )
        except (BackupError, OSError, sqlite3.Error) as exc:
            log.warning("scheduled backup failed: %s; next try in %.0fs", exc, interval)
            continue
        log.info(
            "backup %s: %d events, last stream id %s",
            result.path,
            result.events,
            result.last_stream_id,
        )
