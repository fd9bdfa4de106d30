"""One import: read and validate every record, publish, then verify in the database.

The worker stays the only writer: events go onto the stream, and the report
reads the ``events`` and ``dead_letters`` tables read-only to see what became
of each id.
"""

from __future__ import annotations

import csv
import sqlite3
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from contracts.client import Client
from contracts.errors import NoWorkerError, RedisUnreachableError, RequestFailedError
from contracts.events import WIRE_FIELD, AnyEvent, to_wire
from contracts.partitions import stream_for
from contracts.query_db import connect_readonly, is_url
from contracts.query_model import DeadLetteredError, QueryError
from contracts.redisclient import SyncRedis
from worker.importers import FORMATS
from worker.importers.base import ImportContext, Record, RecordError, Skip

_CHUNK = 500
MAX_WAIT_S = 30.0  # the longest wait one request-channel `wait` takes


@dataclass
class Report:
    format: str
    files: list[str]
    dry_run: bool
    records_read: int = 0
    events: int = 0
    already_stored: int = 0
    published: int = 0
    committed: int = 0
    dead_lettered: int = 0
    skipped: list[Skip] = field(default_factory=list)
    waited_s: float = 0.0
    verified_by: str = "database"
    verify_error: str | None = None
    ok: bool = False

    def problems(self, allow_skips: bool) -> list[str]:
        found = []
        if self.skipped and not allow_skips:
            found.append(f"{len(self.skipped)} record(s) skipped (see above; --allow-skips)")
        if not self.dry_run:
            if self.published + self.already_stored != self.events:
                found.append(f"published {self.published} of {self.events} new events")
            if self.dead_lettered:
                found.append(f"{self.dead_lettered} event(s) dead-lettered")
            if self.verify_error is not None:
                found.append(f"could not verify the commits: {self.verify_error}")
            elif self.committed != self.events:
                missing = self.events - self.committed - self.dead_lettered
                where, hint = (
                    ("in the database", "is the worker running on this --db and --stream?")
                    if self.verified_by == "database"
                    else ("by the worker", "is the worker reading this --stream?")
                )
                found.append(
                    f"committed {self.committed} of {self.events} events "
                    f"({missing} not seen {where} after {self.waited_s:.1f}s; {hint})"
                )
        return found

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "files": self.files,
            "dry_run": self.dry_run,
            "records_read": self.records_read,
            "events": self.events,
            "already_stored": self.already_stored,
            "published": self.published,
            "committed": self.committed,
            "dead_lettered": self.dead_lettered,
            "skipped": [{"where": s.where, "reason": s.reason} for s in self.skipped],
            "verified_by": self.verified_by,
            "ok": self.ok,
        }


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
        transient=True,
    )


def collect(
    fmt: str, paths: Sequence[Path], ctx: ImportContext, progress: Progress, report: Report
) -> list[AnyEvent]:
    """Read and validate every record of every file; the events in order, ids unique."""
    reader = FORMATS[fmt]
    events: list[AnyEvent] = []
    first_seen: dict[str, str] = {}
    task = progress.add_task("reading", total=None)
    for path in paths:
        try:
            items: Iterable[Record | Skip] = list(reader(path, ctx))
        except (RecordError, OSError, UnicodeDecodeError, sqlite3.DatabaseError, csv.Error) as exc:
            items = [Skip(str(path), f"file cannot be read: {exc}")]
        for item in items:
            report.records_read += 1
            progress.advance(task)
            if isinstance(item, Skip):
                report.skipped.append(item)
                continue
            dup = next((first_seen[e.id] for e in item.events if e.id in first_seen), None)
            if dup is not None:
                report.skipped.append(Skip(item.where, f"same record key as {dup}"))
                continue
            for event in item.events:
                first_seen[event.id] = item.where
            events.extend(item.events)
    report.events = len(events)
    return events


def publish(
    client: SyncRedis,
    stream: str,
    events: Sequence[AnyEvent],
    progress: Progress,
    partitions: int = 1,
) -> int:
    """XADD every event (to its source's partition stream when ``partitions`` > 1),
    pipelined in chunks; returns how many Redis took."""
    task = progress.add_task("publishing", total=len(events))
    sent = 0
    for start in range(0, len(events), _CHUNK):
        chunk = events[start : start + _CHUNK]
        pipe = client.pipeline(transaction=False)
        for event in chunk:
            pipe.xadd(stream_for(stream, event.source, partitions), {WIRE_FIELD: to_wire(event)})
        sent += sum(1 for reply in pipe.execute() if reply)
        progress.advance(task, len(chunk))
    return sent


def stored_ids(db: Path | str, ids: Sequence[str], table: str = "events") -> set[str]:
    """Which of these ids the table holds (read-only; nothing if there is no database)."""
    if is_url(db):
        return _stored_ids_postgres(str(db), ids, table)
    db = Path(db)
    if not db.exists() or not ids:
        return set()
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    found: set[str] = set()
    try:
        for start in range(0, len(ids), _CHUNK):
            chunk = list(ids[start : start + _CHUNK])
            marks = ", ".join("?" * len(chunk))
            sql = f"SELECT event_id FROM {table} WHERE event_id IN ({marks})"
            found.update(r[0] for r in con.execute(sql, chunk))
    except sqlite3.OperationalError:
        return set()  # no schema yet: the worker has not started on this file
    finally:
        con.close()
    return found


def _stored_ids_postgres(url: str, ids: Sequence[str], table: str) -> set[str]:
    """:func:`stored_ids` on PostgreSQL (nothing before the worker made the schema)."""
    found: set[str] = set()
    try:
        with connect_readonly(url) as con:
            for start in range(0, len(ids), _CHUNK):
                chunk = list(ids[start : start + _CHUNK])
                marks = ", ".join("?" * len(chunk))
                sql = f"SELECT event_id FROM {table} WHERE event_id IN ({marks})"
                found.update(r[0] for r in con.execute(sql, chunk))
    except QueryError as exc:
        if "not migrated yet" in str(exc):
            return set()
        raise
    return found


def verify(db: Path | str, ids: Sequence[str], wait_s: float, report: Report) -> None:
    """Wait up to ``wait_s`` for every id to be committed or dead-lettered."""
    started = time.monotonic()
    deadline = started + wait_s
    while True:
        committed = stored_ids(db, ids)
        dead = stored_ids(db, [i for i in ids if i not in committed], "dead_letters")
        if len(committed) + len(dead) >= len(ids) or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    report.committed, report.dead_lettered = len(committed), len(dead)
    report.waited_s = time.monotonic() - started


def verify_via_worker(
    clients: Sequence[Client], ids: Sequence[str], wait_s: float, report: Report
) -> None:
    """Without ``--db``: ask the worker, over the request channel's ``wait`` command, what
    became of each id. The worker commits the stream in order, so once the last id is
    committed or dead-lettered every id before it has been dealt with; then each id is
    looked up without waiting, one request in flight per client (3,000 ids took 4.0-5.5 s
    with one client and 3.2-4.3 s with four, on a busy 2-core machine: the worker's side
    of each ``wait``, a read in a thread, is most of it)."""
    started = time.monotonic()
    report.verified_by = "worker"
    try:
        if ids:
            _wait_for_last(clients[0], ids[-1], started + wait_s)
        shares = [ids[i :: len(clients)] for i in range(len(clients))]
        with ThreadPoolExecutor(len(clients)) as pool:
            counts = list(pool.map(_states, clients, shares))
        committed, dead = sum(c for c, _ in counts), sum(d for _, d in counts)
    except (NoWorkerError, RedisUnreachableError, RequestFailedError) as exc:
        report.verify_error = str(exc)
        committed = dead = 0
    report.committed, report.dead_lettered = committed, dead
    report.waited_s = time.monotonic() - started


def _states(client: Client, ids: Sequence[str]) -> tuple[int, int]:
    """How many of ``ids`` the worker has committed, and how many it dead-lettered."""
    committed = dead = 0
    for event_id in ids:
        try:
            committed += client.wait_for_event(event_id, timeout_s=0)
        except DeadLetteredError:
            dead += 1
    return committed, dead


def _wait_for_last(client: Client, event_id: str, deadline: float) -> None:
    while True:
        left = deadline - time.monotonic()
        try:
            if client.wait_for_event(event_id, timeout_s=max(0.0, min(left, MAX_WAIT_S))):
                return
        except DeadLetteredError:
            return
        if left <= MAX_WAIT_S:
            return
