"""Nothing lost under faults: each test prints events sent and events stored, and asserts
they match. Run them alone with ``pytest -m faults -s``."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
import redis

from contracts import Publisher
from contracts.keys import stream_key
from tests.helpers import (
    WorkerProcess,
    bulk_publish,
    count,
    foreign_write_lock,
    make_settings,
    pending,
    query,
    running_worker,
    wait_for,
    wire_events,
)
from worker.embedded import EmbeddedRedis
from worker.settings import Settings

pytestmark = [pytest.mark.faults, pytest.mark.slow]

OUTAGE_S = float(os.environ.get("TRADESCRIBE_FAULT_OUTAGE_S", "30"))  # as the issue asks


def report(name: str, sent: int, stored: int) -> None:
    print(f"\nFAULT {name}: sent={sent} stored={stored}")
    assert stored == sent, f"{name}: sent {sent} events, stored {stored}"


def stored_so_far(db: Path) -> int:
    """Cheap progress (the log's last seq) for polling while a big ingest runs."""
    if count(db, "meta") == 0 and not db.exists():
        return 0
    try:
        return int(query(db, "SELECT coalesce(max(seq), 0) FROM events")[0][0])
    except Exception:
        return 0


def stored_ids(db: Path) -> set[str]:
    return {row[0] for row in query(db, "SELECT event_id FROM events")}


async def test_worker_killed_five_times_during_100k_ingest_loses_nothing(
    settings: Settings, sync_redis: redis.Redis, worker_process: Callable[..., WorkerProcess],
    names: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    s = make_settings(settings.db, settings.redis_url, names, lease_ttl_ms=1000)
    total = 100_000
    bodies = [b for src in ("k1", "k2", "k3", "k4") for b in wire_events(src, total // 4)]
    sent_ids = {json.loads(b)["id"] for b in bodies}
    t0 = time.monotonic()
    bulk_publish(sync_redis, s.stream, bodies)  # the whole ingest waits in the stream
    print(f"{time.monotonic() - t0:.1f}s published {len(bodies)}")
    proc = worker_process(s)
    rng = random.Random()
    lease = stream_key("lease", s.stream, s.group)
    kills = sorted(rng.sample(range(2_000, 95_000), 5))
    for at in kills:
        await wait_for(lambda at=at: stored_so_far(s.db) >= at, 60, f"{at} events stored")
        # The scenario: the kill lands at a random moment inside the next batch.
        await anyio.sleep(rng.random() * 0.05)
        proc.kill()
        print(f"{time.monotonic() - t0:.1f}s killed at {stored_so_far(s.db)} stored")
        await wait_for(lambda: not sync_redis.exists(lease), 10, "the dead worker's lease")
        proc = worker_process(s)
    await wait_for(lambda: stored_so_far(s.db) >= total, 60, "all events stored")
    await wait_for(lambda: pending(sync_redis, names) == 0, 10, "nothing pending")
    print(f"{time.monotonic() - t0:.1f}s all stored")
    assert stored_ids(s.db) == sent_ids
    report("worker SIGKILLed 5x during 100k ingest", len(sent_ids), count(s.db, "events"))


async def test_redis_restarted_mid_ingest_worker_reconnects_and_loses_nothing(
    own_redis: EmbeddedRedis, tmp_path: Path, names: dict[str, str]
) -> None:
    s = make_settings(tmp_path / "scribe.db", own_redis.url, names)
    client = redis.Redis.from_url(own_redis.url)
    first = wire_events("r1", 10_000)
    second = wire_events("r1", 10_000, start=10_000)
    async with running_worker(s) as worker:
        bulk_publish(client, s.stream, first)
        await wait_for(lambda: count(s.db, "events") >= 2000, 30, "the ingest under way")
        client.close()
        own_redis.stop()  # AOF on: a clean restart keeps every accepted entry
        await wait_for(
            lambda: (worker.stats.last_error or "").startswith("redis unreachable"),
            10, "the outage in the worker's stats",
        )  # fmt: skip
        print(f"\nduring the outage: last_error={worker.stats.last_error!r}")
        own_redis.start()
        client = redis.Redis.from_url(own_redis.url)
        bulk_publish(client, s.stream, second)
        await wait_for(lambda: count(s.db, "events") >= 20_000, 60, "all events stored")
        await wait_for(lambda: pending(client, names) == 0, 10, "nothing pending")
        # The outage is over: the first Redis call that works again clears it from status.
        await wait_for(lambda: worker.stats.last_error is None, 10, "the outage cleared")
    client.close()
    sent = {json.loads(b)["id"] for b in first + second}
    assert stored_ids(s.db) == sent
    report("Redis restarted (AOF) mid-ingest", len(sent), count(s.db, "events"))


def _keep_publishing(
    url: str, stream: str, source: str, spool_dir: Path, stop: threading.Event
) -> int:
    """A bot: one trade.opened every ~2 ms, numbered, until stopped; returns how many."""
    n = 0
    with Publisher(url, source=source, stream=stream, spool_dir=spool_dir, mode="paper") as pub:
        while not stop.is_set():
            pub.publish("trade.opened", trade_id=f"{source}-{n:06d}", symbol="BTCUSDT",
                        side="buy", quantity="1", entry_price="100")  # fmt: skip
            n += 1
            time.sleep(0.002)  # the bot's rate, not a wait for a condition
        assert pub.flush(timeout_s=60), pub.spool_status()
    return n


async def test_redis_down_while_four_publishers_publish_everything_arrives_once_in_order(
    own_redis: EmbeddedRedis, tmp_path: Path, names: dict[str, str]
) -> None:
    s = make_settings(tmp_path / "scribe.db", own_redis.url, names)
    stop = threading.Event()
    sent: dict[str, int] = {}

    async def bot(source: str) -> None:
        sent[source] = await anyio.to_thread.run_sync(
            _keep_publishing, own_redis.url, s.stream, source, tmp_path / "spool", stop
        )

    async with running_worker(s) as worker:
        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(bot, f"bot-{i}")
            # The timeline of the scenario, not waits for a condition: a second of normal
            # publishing, the outage (the bots keep publishing into the spool), a second after.
            await anyio.sleep(1)
            own_redis.stop()
            await anyio.sleep(OUTAGE_S)
            files = list((tmp_path / "spool").glob("*.spool"))
            waiting = sum(f.stat().st_size for f in files)
            print(f"\noutage {OUTAGE_S}s: {len(files)} spool files, {waiting} bytes waiting; "
                  f"worker last_error={worker.stats.last_error!r}")  # fmt: skip
            own_redis.start()
            await anyio.sleep(1)
            stop.set()
        total = sum(sent.values())
        await wait_for(lambda: count(s.db, "events") >= total, 60, "every event stored")
    for source, n in sent.items():
        ids = [r[0] for r in query(s.db, "SELECT subject FROM events WHERE source = ? ORDER BY seq",
                                   (source,))]  # fmt: skip
        assert ids == [f"{source}-{i:06d}" for i in range(n)], f"{source} out of order or lost"
    report(f"Redis down {OUTAGE_S:g}s, 4 publishers", total, count(s.db, "events"))


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs for the database, or a skip saying why it cannot be made here."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("disk-full test needs root to mount a 2 MB tmpfs (run CI as root or in a VM)")
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)],
        capture_output=True, text=True,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _notes_events(source: str, n: int) -> list[str]:
    bodies = wire_events(source, n)
    pad = "x" * 8000
    return [b.replace('"trade_id"', f'"notes":"{pad}","trade_id"') for b in bodies]


async def test_disk_full_stops_acks_shows_the_error_and_resumes_with_nothing_lost(
    small_fs: Path, settings: Settings, sync_redis: redis.Redis, names: dict[str, str]
) -> None:
    s = make_settings(small_fs / "scribe.db", settings.redis_url, names, batch_max=50)
    bodies = _notes_events("full", 600)  # ~5 MB of events for a 2 MB disk
    async with running_worker(s) as worker:
        bulk_publish(sync_redis, s.stream, bodies)
        await wait_for(
            lambda: "full" in (worker.stats.last_error or ""), 30, "the disk-full error in stats"
        )
        stuck_at = count(s.db, "events")
        waiting = pending(sync_redis, names)
        print(f"\ndisk full: stored={stuck_at} pending={waiting} error={worker.stats.last_error!r}")
        assert waiting > 0
        assert stuck_at < len(bodies)
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_fs)], check=True)
        await wait_for(lambda: count(s.db, "events") >= len(bodies), 30, "all events stored")
        await wait_for(lambda: pending(sync_redis, names) == 0, 10, "nothing pending")
    sent = {json.loads(b)["id"] for b in bodies}
    assert stored_ids(s.db) == sent
    report("database disk full, then space returns", len(sent), count(s.db, "events"))


async def test_long_reader_and_foreign_write_lock_make_the_worker_wait_not_lose(
    settings: Settings, sync_redis: redis.Redis, names: dict[str, str]
) -> None:
    s = make_settings(settings.db, settings.redis_url, names, busy_timeout_ms=200)
    batches = [wire_events("lk", 2000, start=i * 2000) for i in range(3)]
    async with running_worker(s) as worker:
        bulk_publish(sync_redis, s.stream, batches[0])
        await wait_for(lambda: count(s.db, "events") >= 2000, 30, "first events stored")
        reader = sqlite3.connect(s.db, isolation_level=None)
        reader.execute("BEGIN")
        held = reader.execute("SELECT count(*) FROM events").fetchone()[0]
        bulk_publish(sync_redis, s.stream, batches[1])  # a reader never blocks the writer (WAL)
        await wait_for(lambda: count(s.db, "events") >= 4000, 30, "stored past a long reader")
        assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == held
        reader.close()
        with foreign_write_lock(s.db):
            bulk_publish(sync_redis, s.stream, batches[2])
            await wait_for(
                lambda: "locked" in (worker.stats.last_error or ""), 20, "the lock in stats"
            )
            print(f"\nforeign lock: error={worker.stats.last_error!r} "
                  f"pending={pending(sync_redis, names)}")  # fmt: skip
            assert pending(sync_redis, names) > 0
            assert count(s.db, "events") == 4000
        await wait_for(lambda: count(s.db, "events") >= 6000, 30, "stored after the lock went")
        await wait_for(lambda: pending(sync_redis, names) == 0, 10, "nothing pending")
    sent = {json.loads(b)["id"] for batch in batches for b in batch}
    assert stored_ids(s.db) == sent
    report("long reader + foreign write lock", len(sent), count(s.db, "events"))


async def test_sigterm_mid_batch_commits_and_acks_the_batch_in_hand(
    settings: Settings, sync_redis: redis.Redis, worker_process: Callable[..., WorkerProcess],
    names: dict[str, str],
) -> None:  # fmt: skip
    bodies = wire_events("term", 20_000)
    bulk_publish(sync_redis, settings.stream, bodies)
    proc = worker_process()
    await wait_for(lambda: stored_so_far(settings.db) >= 1000, 30, "the ingest under way")
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
    at_stop = count(settings.db, "events")
    print(f"\nSIGTERM: exit 0 with {at_stop} stored, pending={pending(sync_redis, names)}")
    assert 0 < at_stop < len(bodies)
    assert pending(sync_redis, names) == 0  # the batch in hand was committed, then acked
    assert "stopped" in proc.output()
    lease = stream_key("lease", settings.stream, settings.group)
    assert not sync_redis.exists(lease)  # released on a clean stop: a restart starts at once
    worker_process(log_name="worker2.log")
    await wait_for(lambda: stored_so_far(settings.db) >= len(bodies), 60, "all stored")
    await wait_for(lambda: pending(sync_redis, names) == 0, 10, "nothing pending")
    assert stored_ids(settings.db) == {json.loads(b)["id"] for b in bodies}
    report("SIGTERM mid-batch, then restart", len(bodies), count(settings.db, "events"))
