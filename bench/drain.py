"""Loading the stream, running the real worker as a child process, timing its drain.

The worker runs as ``python -m worker.cli worker``, exactly as systemd runs it,
so its peak RSS is its own (``VmHWM`` in ``/proc/<pid>/status``) and the bench's
polling never shares its interpreter. The drain is timed from Redis: from the
moment the group's last-delivered id first moves (the first read) to the moment
every entry is delivered and acknowledged (the worker acks after each commit).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.errors import BenchError
from contracts.events import WIRE_FIELD
from worker.settings import Settings

_PIPELINE_CHUNK = 5000
_POLL_S = 0.01  # each poll costs CPU on the cores the worker uses (at 2 ms: 9% of a core)


def load_stream(client: redis.Redis, stream: str, bodies: Iterable[str]) -> list[str]:
    """XADD every body with pipelines (no transaction); returns the stream ids."""
    ids: list[str] = []
    pipe = client.pipeline(transaction=False)
    queued = 0
    for body in bodies:
        pipe.xadd(stream, {WIRE_FIELD: body})
        queued += 1
        if queued == _PIPELINE_CHUNK:
            ids.extend(_text(i) for i in pipe.execute())
            queued = 0
    if queued:
        ids.extend(_text(i) for i in pipe.execute())
    return ids


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def worker_env(settings: Settings) -> dict[str, str]:
    """The worker's settings as environment variables (over a clean environment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADESCRIBE_")}
    env.update(
        TRADESCRIBE_REDIS_URL=settings.redis_url,
        TRADESCRIBE_DB=settings.database_url or str(settings.db),
        TRADESCRIBE_STREAM=settings.stream,
        TRADESCRIBE_GROUP=settings.group,
        TRADESCRIBE_CONSUMER=settings.consumer,
        TRADESCRIBE_BATCH_MAX=str(settings.batch_max),
        TRADESCRIBE_SYNCHRONOUS=settings.synchronous,
        TRADESCRIBE_BLOCK_MS=str(settings.block_ms),
        TRADESCRIBE_TRIM_KEEP_S=str(settings.trim_keep_s),
        TRADESCRIBE_PARTITIONS=str(settings.partitions),
        TRADESCRIBE_LEASE_TTL_MS=str(settings.lease_ttl_ms),
        TRADESCRIBE_WRITER_PROCESS=str(settings.writer_process).lower(),
        TRADESCRIBE_LOG_LEVEL="WARNING",
    )
    if settings.channel_key is not None:  # PostgreSQL has no file to keep one beside
        env["TRADESCRIBE_CHANNEL_KEY"] = settings.channel_key.get_secret_value()
    return env


class WorkerChild:
    """``tradescribe worker`` in a child process, with its log in a file."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings = settings
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "worker.cli", "worker"],
                env=worker_env(settings),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            tail = self.log.read_text(errors="replace")[-800:]
            raise BenchError(f"the worker exited with code {code} during the benchmark: {tail}")

    def peak_rss_mb(self) -> float:
        """The worker's peak resident memory so far (VmHWM), in MB, with its write
        process's (the two peaks added: an upper bound of what they held at once)."""
        return sum(_peak_rss_mb(pid) for pid in (self.process.pid, *child_pids(self.process.pid)))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _peak_rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child_pids(pid: int) -> list[int]:
    """The processes ``pid``'s main thread started (Linux ``/proc``)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds a process has used so far (Linux ``/proc``; 0 elsewhere)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def cpu_split(child: WorkerChild, redis_pid: int | None) -> dict[str, float]:
    """CPU seconds so far of the worker's event loop, its write process and redis-server."""
    pid = child.process.pid
    return {
        "worker": cpu_seconds(pid),
        "write_process": sum(cpu_seconds(c) for c in child_pids(pid)),
        "redis": cpu_seconds(redis_pid),
    }


def cpu_used(start: dict[str, float], end: dict[str, float]) -> dict[str, float]:
    return {k: max(end[k] - start.get(k, 0.0), 0.0) for k in end}


def _group(client: redis.Redis, stream: str, group: str) -> dict[str, Any] | None:
    for info in client.xinfo_groups(stream):
        if _text(info["name"]) == group:
            return {_text(k): v for k, v in info.items()}
    return None


def wait_reading(client: redis.Redis, child: WorkerChild, timeout_s: float = 30.0) -> None:
    """Until the worker's consumer exists in the group (it has issued a read)."""
    s = child.settings
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        child.check_alive()
        try:
            consumers = client.xinfo_consumers(s.stream, s.group)
        except redis.ResponseError:
            consumers = []
        if any(_text(c["name"]) == s.consumer for c in consumers):
            return
        time.sleep(0.01)
    raise BenchError(f"the worker did not start reading within {timeout_s:.0f}s (log: {child.log})")


class WalWatch:
    """The database's WAL file, looked at on each poll: its largest and latest size."""

    def __init__(self, db: Path) -> None:
        self.path = Path(f"{db}-wal")
        self.max_bytes = self.last_bytes = 0

    def __call__(self) -> None:
        try:
            size = self.path.stat().st_size
        except OSError:
            size = 0
        self.last_bytes = size
        self.max_bytes = max(self.max_bytes, size)


def wait_drained(
    client: redis.Redis,
    child: WorkerChild,
    last_id: str,
    timeout_s: float,
    on_first: Callable[[], object] | None = None,
    on_poll: Callable[[], object] | None = None,
) -> tuple[float, float]:
    """(first read, last ack) as monotonic times, polling the group every 10 ms;
    ``on_first`` is called when the first read is seen, ``on_poll`` at every poll."""
    s = child.settings
    first: float | None = None
    deadline = time.monotonic() + timeout_s
    polls = 0
    while time.monotonic() < deadline:
        info = _group(client, s.stream, s.group)
        now = time.monotonic()
        if on_poll is not None:
            on_poll()
        if info is not None:
            delivered = _text(info["last-delivered-id"])
            if first is None and delivered != "0-0":
                first = now
                if on_first is not None:
                    on_first()
            if delivered == last_id and int(info["pending"]) == 0:
                return first if first is not None else now, now
        polls += 1
        if polls % 50 == 0:
            child.check_alive()
        time.sleep(_POLL_S)
    raise BenchError(f"the worker did not drain the stream within {timeout_s:.0f}s")


@dataclass
class DrainResult:
    events: int
    seconds: float
    events_per_s: float
    stored: int
    dead_letters: int
    peak_rss_mb: float
    stream_ids: list[str]
    # CPU microseconds per event from the first read to the last ack: the worker's
    # event loop, its write process, redis-server (0 where /proc is missing)
    cpu_us_per_event: dict[str, float]
    wal_max_mb: float = 0.0  # the WAL file's size: the largest seen while draining,
    wal_end_mb: float = 0.0  # and at the last ack
    db_mb: float = 0.0  # the database file's size at the end


def run_drain(
    client: redis.Redis,
    settings: Settings,
    bodies: Iterable[str],
    log: Path,
    stored_before: int,
    redis_pid: int | None = None,
) -> DrainResult:
    """Put ``bodies`` on the stream, then let a fresh worker drain them; timed."""
    s = settings
    client.delete(s.stream)
    ids = load_stream(client, s.stream, bodies)
    client.xgroup_create(s.stream, s.group, id="0")
    child = WorkerChild(s, log)
    marks: dict[str, dict[str, float]] = {}
    wal = WalWatch(s.db)
    try:
        first, last = wait_drained(
            client,
            child,
            ids[-1],
            timeout_s=60 + len(ids) / 2000,
            on_first=lambda: marks.setdefault("start", cpu_split(child, redis_pid)),
            on_poll=wal,
        )
        used = cpu_used(marks.get("start", {}), cpu_split(child, redis_pid))
        rss = child.peak_rss_mb()
    finally:
        child.stop()
    client.delete(s.stream)  # free Redis memory for the next phase
    stored, dead = _count_rows(s.db)
    seconds = max(last - first, 1e-9)
    stored -= stored_before
    per_event = {k: v * 1e6 / len(ids) for k, v in used.items()}
    return DrainResult(
        len(ids),
        seconds,
        len(ids) / seconds,
        stored,
        dead,
        rss,
        ids,
        per_event,
        wal.max_bytes / 2**20,
        wal.last_bytes / 2**20,
        s.db.stat().st_size / 2**20,
    )


def _count_rows(db: Path) -> tuple[int, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        events = con.execute("SELECT count(*) FROM events").fetchone()[0]
        dead = con.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
        return int(events), int(dead)
    finally:
        con.close()
