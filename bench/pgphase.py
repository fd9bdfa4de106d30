"""The PostgreSQL phase of ``tradescribe bench``: the same events drained into SQLite
(the reference), into PostgreSQL by one worker from one stream, by one worker holding
four partition streams, by two workers sharing the four (docs/scaling.md), then by one
worker from one stream again and into SQLite again: the ratio of the two engines is
that of their means, each pair's mean taken at the same middle instant, so a machine
that drifts faster or slower through the phase moves both alike.

PostgreSQL is the ``pgserver`` wheel's (a unix socket in a temporary folder); where
none can start, the phase is skipped and says why. Each PostgreSQL drain: the workers
start on empty streams and take their partitions; they are paused (SIGSTOP) while the
events go on the streams, then let go (SIGCONT); timed from there to the last
acknowledgement. CPU per event: each worker process, every process of the PostgreSQL
server (backends, WAL writer, checkpointer: all of it), redis-server.
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import redis

from bench import drain, pgdrain
from bench.errors import BenchError
from bench.workload import wire_events
from contracts.events import WIRE_FIELD
from contracts.keys import stream_key
from contracts.partitions import partition_streams, stream_for_wire
from worker.settings import Settings

if TYPE_CHECKING:
    from bench.run import Bench

PARTITIONS = 4  # for the two-worker drain: two partitions each


def phase_postgres(bench: Bench, figures: dict[str, Any]) -> None:
    n = bench.sizes.pg_drain
    folder = Path(tempfile.mkdtemp(prefix="tradescribe-bench-pg-"))
    folder.chmod(0o755)  # pgserver runs the server as a user of its own under root
    try:
        admin, server = pgdrain._pgserver(folder / "pg")
    except Exception as exc:  # any reason it cannot start: say it, measure the rest
        shutil.rmtree(folder, ignore_errors=True)
        reason = f"no PostgreSQL could be started (pgserver: {exc})"
        figures["postgres"] = {"skipped": reason}
        bench.log(f"postgres: skipped, {reason}")
        return
    try:
        with bench.console.status(f"postgres: {n:,} events into SQLite, then PostgreSQL x1, x2"):
            result = _measure(bench, admin, int(server.get_pid()), n)
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
    figures["postgres"] = result
    figures["pg_vs_sqlite"] = result["one_worker_mean_events_per_s"] / result["sqlite_events_per_s"]
    figures["pg_two_vs_one"] = (
        result["two_workers"]["events_per_s"] / result["one_worker"]["events_per_s"]
    )
    figures["pg_partitions_vs_one"] = (
        result["one_worker_partitions"]["events_per_s"] / result["one_worker"]["events_per_s"]
    )
    bench.log(
        f"postgres: SQLite {result['sqlite_events_per_s']:,.0f} (drains "
        f"{' and '.join(f'{v:,}' for v in result['sqlite_drains_events_per_s'])}), PostgreSQL "
        f"one worker {result['one_worker_mean_events_per_s']:,.0f} (drains "
        f"{result['one_worker']['events_per_s']:,} and "
        f"{result['one_worker_again']['events_per_s']:,}; holding {PARTITIONS} partitions "
        f"{result['one_worker_partitions']['events_per_s']:,.0f}), two workers "
        f"{result['two_workers']['events_per_s']:,.0f} events/s; batches of at most "
        f"{result['batch_max']['sqlite']:,} on SQLite, {result['batch_max']['postgresql']:,} "
        "on PostgreSQL (each engine's default)"
    )


def _measure(bench: Bench, admin: str, postmaster: int, n: int) -> dict[str, Any]:
    bodies = list(wire_events(n, seed=31))
    key = secrets.token_hex(16)
    batch_max: dict[str, int] = {}

    def settings(name: str, db: Any, partitions: int) -> Settings:
        # batch_max left to each engine's default (TRADESCRIBE_BATCH_MAX still applies)
        s = Settings(redis_url=bench.url, db=db, stream=f"bench:{name}", group="bench",
                     consumer=f"bench-{name}", trim_keep_s=0, partitions=partitions,
                     lease_ttl_ms=1500, channel_key=key)  # fmt: skip
        batch_max[s.engine] = s.batch_max
        return s

    client = bench.client

    def sqlite_drain(name: str) -> dict[str, Any]:
        db = bench.workdir / f"{name}.db"
        try:
            return pgdrain.drain_once(client, settings(name, db, 1), bodies,
                                      bench.workdir / f"{name}.log", bench.redis_pid)  # fmt: skip
        finally:
            db.unlink(missing_ok=True)

    def pg_drain(name: str, partitions: int = 1, workers: int = 1) -> dict[str, Any]:
        db = anyio.run(pgdrain._new_database, admin)
        return drain_workers(bench, settings(name, db, partitions), bodies, workers, postmaster)

    sqlite = sqlite_drain("pg-sqlite")
    one = pg_drain("pg1")
    # Reported, no target: the same one worker holding the four partitions, several
    # commits in flight where one stream has one (docs/scaling.md).
    one_split = pg_drain("pg1p", PARTITIONS)
    two = pg_drain("pg2", PARTITIONS, workers=2)
    # The same pair in the opposite order (A B ... B A): the ratio of their means.
    one_again = pg_drain("pg1b")
    sqlite_again = sqlite_drain("pg-sqlite-2")
    sqlite_drains = [sqlite["events_per_s"], sqlite_again["events_per_s"]]
    return {
        "events": n,
        "batch_max": batch_max,
        "sqlite_events_per_s": _mean(sqlite_drains),
        "sqlite_drains_events_per_s": sqlite_drains,
        "sqlite_cpu_us_per_event": sqlite["cpu_us_per_event"],
        "one_worker_mean_events_per_s": _mean([one["events_per_s"], one_again["events_per_s"]]),
        "one_worker": one,
        "one_worker_again": one_again,
        "one_worker_partitions": one_split,
        "two_workers": two,
    }


def _mean(values: list[int]) -> int:
    return round(sum(values) / len(values))


def drain_workers(
    bench: Bench, s: Settings, bodies: list[str], workers: int, postmaster: int
) -> dict[str, Any]:
    """``bodies`` drained into PostgreSQL by ``workers`` worker processes sharing
    ``s.partitions`` streams; events/s and CPU microseconds per event of each part."""
    client = bench.client
    streams = partition_streams(s.stream, s.partitions)
    client.delete(*streams)
    children = [
        drain.WorkerChild(s.model_copy(update={"consumer": f"{s.consumer}-w{i}"}),
                          bench.workdir / f"{s.consumer}-w{i}.log")
        for i in range(workers)
    ]  # fmt: skip
    try:
        _wait_split(client, s, children)
        for child in children:
            child.process.send_signal(signal.SIGSTOP)
        try:
            xadd_cpu = drain.cpu_seconds(bench.redis_pid)
            last = _load(client, s, bodies)
            xadd_cpu = drain.cpu_seconds(bench.redis_pid) - xadd_cpu
        finally:
            for child in children:
                child.process.send_signal(signal.SIGCONT)
        started, before = time.monotonic(), _cpu(children, postmaster, bench.redis_pid)
        wal = anyio.run(_wal_bytes, s.database_url)
        _wait_acked(client, s, last, children, timeout_s=60 + len(bodies) / 1000)
        seconds = time.monotonic() - started
        used = drain.cpu_used(before, _cpu(children, postmaster, bench.redis_pid))
        wal = anyio.run(_wal_bytes, s.database_url) - wal
    finally:
        for child in children:
            child.stop()
    client.delete(*streams)
    assert s.database_url is not None
    stored, dead = anyio.run(pgdrain._stored, s.database_url)
    if stored + dead != len(bodies):
        raise BenchError(f"PostgreSQL holds {stored} events and {dead} dead letters of "
                         f"{len(bodies)} sent (logs: {bench.workdir})")  # fmt: skip
    return {
        "workers": workers,
        "partitions": s.partitions,
        "seconds": round(seconds, 3),
        "events_per_s": round(len(bodies) / seconds),
        "stored": stored,
        "cpu_us_per_event": {k: round(v * 1e6 / len(bodies), 1) for k, v in used.items()},
        # redis-server's CPU taking the events in (pipelined XADD, 5,000 a round trip)
        "redis_xadd_us_per_event": round(xadd_cpu * 1e6 / len(bodies), 1),
        "bytes_per_event": round(sum(len(b) for b in bodies) / len(bodies)),
        "wal_bytes_per_event": round(wal / len(bodies)),
    }


async def _wal_bytes(url: str | None) -> int:
    """Where PostgreSQL's write-ahead log is, in bytes since its start."""
    import asyncpg

    con = await asyncpg.connect(url)
    try:
        return int(await con.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')"))
    finally:
        await con.close()


def _holders(client: redis.Redis, s: Settings) -> list[str | None]:
    out = []
    for stream in partition_streams(s.stream, s.partitions):
        raw = client.get(stream_key("lease", stream, s.group))
        out.append(json.loads(raw)["consumer"] if raw else None)
    return out


def _wait_split(client: redis.Redis, s: Settings, children: list[drain.WorkerChild]) -> None:
    """Until every partition is held and every worker holds its share."""
    want = {c.settings.consumer for c in children}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for child in children:
            child.check_alive()
        held = _holders(client, s)
        if None not in held and set(held) == want:
            counts = [held.count(w) for w in want]
            if max(counts) - min(counts) <= 1:
                time.sleep(0.3)  # the lanes open their groups and start reading
                return
        time.sleep(0.05)
    raise BenchError(f"the workers did not share the partitions within 60 s: {_holders(client, s)}")


def _load(client: redis.Redis, s: Settings, bodies: list[str]) -> dict[str, str]:
    """XADD every body to its partition; the last stream id of each stream."""
    last: dict[str, str] = {}
    for start in range(0, len(bodies), 5000):
        chunk = bodies[start : start + 5000]
        pipe = client.pipeline(transaction=False)
        targets = [stream_for_wire(s.stream, b, s.partitions) for b in chunk]
        for stream, body in zip(targets, chunk, strict=True):
            pipe.xadd(stream, {WIRE_FIELD: body})
        for stream, entry_id in zip(targets, pipe.execute(), strict=True):
            last[stream] = drain._text(entry_id)
    return last


def _wait_acked(
    client: redis.Redis,
    s: Settings,
    last: dict[str, str],
    children: list[drain.WorkerChild],
    timeout_s: float,
) -> None:
    deadline = time.monotonic() + timeout_s
    polls = 0
    while time.monotonic() < deadline:
        done = True
        for stream, last_id in last.items():
            info = drain._group(client, stream, s.group)
            if info is None or info["last-delivered-id"] != last_id or int(info["pending"]):
                done = False
                break
        if done:
            return
        polls += 1
        if polls % 50 == 0:
            for child in children:
                child.check_alive()
        time.sleep(0.01)
    raise BenchError(f"the workers did not drain the partitions within {timeout_s:.0f}s")


def _cpu(
    children: list[drain.WorkerChild], postmaster: int, redis_pid: int | None
) -> dict[str, float]:
    out: dict[str, float] = {}
    for i, child in enumerate(children):
        split = drain.cpu_split(child, None)
        out[f"worker_{i}"] = split["worker"]
        out[f"write_process_{i}"] = split["write_process"]
    server = [postmaster, *drain.child_pids(postmaster)]
    out["postgres"] = sum(drain.cpu_seconds(pid) for pid in server)
    out["redis"] = drain.cpu_seconds(redis_pid)
    return out
