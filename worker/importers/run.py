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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from contracts.events import WIRE_FIELD, AnyEvent, to_wire
from worker.importers import FORMATS
from worker.importers.base import ImportContext, Record, RecordError, Skip

_CHUNK = 500


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
            if self.committed != self.events:
                missing = self.events - self.committed - self.dead_lettered
                found.append(
                    f"committed {self.committed} of {self.events} events "
                    f"({missing} not seen in the database after {self.waited_s:.1f}s; "
                    "is the worker running on this --db and --stream?)"
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
    client: redis.Redis, stream: str, events: Sequence[AnyEvent], progress: Progress
) -> int:
    """XADD every event, pipelined in chunks; returns how many Redis took."""
    task = progress.add_task("publishing", total=len(events))
    sent = 0
    for start in range(0, len(events), _CHUNK):
        chunk = events[start : start + _CHUNK]
        pipe = client.pipeline(transaction=False)
        for event in chunk:
            pipe.xadd(stream, {WIRE_FIELD: to_wire(event)})
        sent += sum(1 for reply in pipe.execute() if reply)
        progress.advance(task, len(chunk))
    return sent


def stored_ids(db: Path, ids: Sequence[str], table: str = "events") -> set[str]:
    """Which of these ids the table holds (read-only; nothing if there is no database)."""
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


def verify(db: Path, ids: Sequence[str], wait_s: float, report: Report) -> None:
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
