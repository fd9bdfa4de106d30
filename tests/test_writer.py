"""The write process: it commits batches, dies with the worker, is restarted when it dies."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
import redis

from bench.drain import child_pids
from tests.helpers import WorkerProcess, count, make_db, pending, publish_many, wait_for
from worker.settings import Settings
from worker.store.write import Planned
from worker.store.writer import WriterProcess

pytestmark = pytest.mark.delivery


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def writer_of(proc: WorkerProcess, timeout: float = 20.0) -> int:
    assert proc.process is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = child_pids(proc.process.pid)
        if kids:
            return kids[0]
        time.sleep(0.05)
    raise AssertionError(f"no write process under the worker: {proc.output()[-500:]}")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_worker_killed_takes_its_writer_with_it(
    settings: Settings, sync_redis: redis.Redis, worker_process: Callable[..., WorkerProcess]
) -> None:
    # The writer waits for a lock held by another process (busy_timeout 5 s) with a
    # batch in hand when the worker is killed. Ending its stdin would not stop it
    # until the wait ends, and then it would commit for a dead worker: it must die now.
    proc = worker_process()
    writer = writer_of(proc)
    publish_many(sync_redis, settings.stream, 10)
    anyio.run(wait_for, lambda: count(settings.db, "events") == 10)
    foreign = sqlite3.connect(settings.db, isolation_level=None)
    foreign.execute("BEGIN IMMEDIATE")
    try:
        publish_many(sync_redis, settings.stream, 10, source="bot-b")
        time.sleep(1.0)  # read, planned, and waiting for the lock
        assert alive(writer)
        proc.kill()
        deadline = time.monotonic() + 1.5
        while alive(writer) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not alive(writer), "the write process outlived a worker killed with -9"
    finally:
        foreign.execute("ROLLBACK")
        foreign.close()
    assert count(settings.db, "events") == 10


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_writer_killed_mid_stream_is_restarted_and_loses_nothing(
    settings: Settings,
    sync_redis: redis.Redis,
    names: dict[str, str],
    worker_process: Callable[..., WorkerProcess],
) -> None:
    sent = 20_000
    publish_many(sync_redis, settings.stream, sent)
    proc = worker_process()
    kills = 0
    while kills < 3 and count(settings.db, "events") < sent:
        writer = writer_of(proc)
        time.sleep(0.05)
        os.kill(writer, signal.SIGKILL)
        kills += 1
        deadline = time.monotonic() + 20
        while writer_of(proc) == writer and time.monotonic() < deadline:
            time.sleep(0.02)
    anyio.run(wait_for, lambda: count(settings.db, "events") == sent)
    anyio.run(wait_for, lambda: pending(sync_redis, names) == 0)
    assert count(settings.db, "trades") == sent
    assert kills >= 1
    assert "the write process exited" in proc.output()


def _batch(*statements: tuple[str, list[tuple[object, ...]]]) -> Planned:
    return Planned(events=[], changes=[], appends=list(statements), dead=[], last_stream_id=None)


async def test_writer_errors_keep_their_class_and_roll_back(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    await make_db(db)
    writer = WriterProcess(db, "FULL", 1000)
    writer.start()
    try:
        journal = (
            "INSERT INTO journal_entries (event_id, source, account, plugin_id, mode, at, text) "
            "VALUES (?, 'b', 'a', 'legacy', 'live', '2026-01-01T00:00:00.000000Z', 't')"
        )
        broken = _batch((journal, [("J1",)]), ("INSERT INTO trades (source) VALUES (?)", [("b",)]))
        with pytest.raises(sqlite3.IntegrityError, match="NOT NULL"):
            await writer.write(broken)
        assert count(db, "journal_entries") == 0  # the half before the error rolled back
        assert await writer.write(_batch((journal, [("J2",)]))) == (0, 0)  # no events: 0 new
        assert count(db, "journal_entries") == 1
    finally:
        writer.close()
    assert writer.pid is None
