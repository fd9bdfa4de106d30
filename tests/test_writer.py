"""The write process: it commits batches, dies with the worker, is restarted when it dies."""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
import redis

from bench.drain import child_pids
from tests.helpers import (
    WorkerProcess,
    alive,
    count,
    make_db,
    pending,
    publish_many,
    query,
    running_worker,
    wait_for,
)
from worker.settings import Settings
from worker.store.write import Planned
from worker.store.writer import WriterProcess

pytestmark = pytest.mark.delivery


def writer_of(proc: WorkerProcess, timeout: float = 20.0) -> int:
    """The pid of the worker's write process, once there is one."""
    assert proc.process is not None
    pid = proc.process.pid
    try:
        kids = anyio.run(wait_for, lambda: child_pids(pid), timeout)
    except AssertionError:
        raise AssertionError(f"no write process under the worker: {proc.output()[-500:]}") from None
    return int(kids[0])


def bytes_read(pid: int) -> int:
    """What ``pid`` has read so far, its stdin included (Linux /proc)."""
    fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(fields["rchar"])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_worker_killed_takes_its_writer_with_it(
    settings: Settings,
    sync_redis: redis.Redis,
    names: dict[str, str],
    worker_process: Callable[..., WorkerProcess],
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
        idle_at = bytes_read(writer)
        publish_many(sync_redis, settings.stream, 10, source="bot-b")
        # read by the worker, and the batch in the writer's hands (it read its stdin): it
        # is waiting for the lock
        anyio.run(
            wait_for,
            lambda: pending(sync_redis, names) == 10 and bytes_read(writer) > idle_at,
            10,
            "the second batch sent to the write process",
        )
        assert alive(writer)
        proc.kill()
        anyio.run(
            wait_for,
            lambda: not alive(writer),
            1.5,
            "the write process to die with a worker killed with -9",
        )
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
    assert proc.process is not None
    worker_pid = proc.process.pid
    kills = 0
    while kills < 3 and (stored := count(settings.db, "events")) < sent:
        writer = writer_of(proc)
        # started and mid-stream: it has committed a batch (and has the next one in hand)
        anyio.run(wait_for, lambda: count(settings.db, "events") > stored, 20, "a commit")
        os.kill(writer, signal.SIGKILL)
        kills += 1
        anyio.run(
            wait_for,
            lambda w=writer: (
                set(child_pids(worker_pid)) - {w} or count(settings.db, "events") == sent
            ),
            20,
            "a new write process (or the kill came after the last commit)",
        )
    anyio.run(wait_for, lambda: count(settings.db, "events") == sent)
    anyio.run(wait_for, lambda: pending(sync_redis, names) == 0)
    print(f"sent {sent}, killed the write process {kills} times mid-stream")
    assert count(settings.db, "trades") == sent
    assert kills >= 1
    assert "the write process exited" in proc.output()


def _batch(*statements: tuple[str, list[tuple[object, ...]]]) -> Planned:
    return Planned(events=[], changes=[], appends=list(statements), dead=[], last_stream_id=None)


async def test_writer_errors_keep_their_class_and_roll_back(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    await make_db(db)
    writer = WriterProcess.sqlite(db, "FULL", 1000)
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


async def test_without_a_write_process_batches_commit_on_the_stores_thread(
    settings: Settings, sync_redis: redis.Redis, names: dict[str, str]
) -> None:
    s = settings.model_copy(update={"writer_process": False})
    ids = publish_many(sync_redis, s.stream, 300)
    async with running_worker(s) as worker:
        assert worker.store.writer is None
        await wait_for(lambda: count(s.db, "events") == 300)
        await wait_for(lambda: pending(sync_redis, names) == 0)
    assert count(s.db, "trades") == 300
    assert {r[0] for r in query(s.db, "SELECT event_id FROM events")} == set(ids)
