"""The same drain on SQLite and on PostgreSQL, in one run: ``python -m bench.pgdrain``.

A redis-server and a PostgreSQL of its own (the ``pgserver`` wheel: a unix socket in
a temporary folder; or ``--pg-url`` of a server you started), the benchmark's event mix
(``bench.workload``), the real worker as a child process on each engine in turn. Per
engine: events/s from the first read to the last ack, and CPU microseconds per event
of the worker's event loop, its write process, redis-server and the PostgreSQL
backends serving the worker and its write process (PostgreSQL only).
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import anyio
import redis

from bench import drain
from bench.workload import check_sample, wire_events
from worker.embedded import EmbeddedRedis, find_redis_server
from worker.settings import Settings


def _pgserver(folder: Path) -> tuple[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server

        server = get_server(folder, cleanup_mode="delete")
    return str(server.get_uri()), server


async def _new_database(admin_url: str) -> str:
    import asyncpg

    name = f"bench_{uuid.uuid4().hex[:10]}"
    con = await asyncpg.connect(admin_url)
    try:
        await con.execute(f"CREATE DATABASE {name}")
    finally:
        await con.close()
    head, _, tail = admin_url.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{name}" + (f"?{tail}" if tail else "")


async def _backend_pids(url: str, worker_pid: int) -> list[int]:
    """The PostgreSQL backend processes serving the worker and its write process (by
    their application_name)."""
    import asyncpg

    con = await asyncpg.connect(url)
    try:
        rows = await con.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE $1",
            f"tradescribe pid {worker_pid} %",
        )
    finally:
        await con.close()
    return [int(r["pid"]) for r in rows]


async def _stored(url: str) -> tuple[int, int]:
    import asyncpg

    con = await asyncpg.connect(url)
    try:
        events = await con.fetchval("SELECT count(*) FROM events")
        dead = await con.fetchval("SELECT count(*) FROM dead_letters")
    finally:
        await con.close()
    return int(events), int(dead)


def drain_once(
    client: redis.Redis, s: Settings, bodies: list[str], log: Path, redis_pid: int | None
) -> dict[str, Any]:
    """One timed drain of ``bodies`` by a fresh worker on ``s``'s database."""
    client.delete(s.stream)
    ids = drain.load_stream(client, s.stream, bodies)
    client.xgroup_create(s.stream, s.group, id="0")
    child = drain.WorkerChild(s, log)
    backends: list[int] = []
    marks: dict[str, dict[str, float]] = {}

    def split() -> dict[str, float]:
        cpu = drain.cpu_split(child, redis_pid)
        if s.database_url is not None:
            if not backends:
                backends.extend(anyio.run(_backend_pids, s.database_url, child.process.pid))
            cpu["postgres"] = sum(drain.cpu_seconds(pid) for pid in backends)
        return cpu

    try:
        first, last = drain.wait_drained(
            client, child, ids[-1], timeout_s=120 + len(ids) / 500,
            on_first=lambda: marks.setdefault("start", split()),
        )  # fmt: skip
        used = drain.cpu_used(marks.get("start", {}), split())
    finally:
        child.stop()
    client.delete(s.stream)
    if s.database_url is not None:
        stored, dead = anyio.run(_stored, s.database_url)
    else:
        stored, dead = drain._count_rows(s.db)
    seconds = max(last - first, 1e-9)
    return {
        "events": len(ids),
        "seconds": round(seconds, 3),
        "events_per_s": round(len(ids) / seconds),
        "stored": stored,
        "dead_letters": dead,
        "cpu_us_per_event": {k: round(v * 1e6 / len(ids), 1) for k, v in used.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument(
        "--batch-max", type=int, help="for both engines (default: each engine's default)"
    )
    parser.add_argument("--pg-url", help="an existing, empty PostgreSQL server's admin URL")
    parser.add_argument(
        "--pg-in-process",
        action="store_true",
        help="PostgreSQL's commits in the worker's process, without a write process "
        "(writer_process=false; SQLite keeps its own)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tradescribe-pgdrain-"))
    work.chmod(0o755)
    server = EmbeddedRedis(find_redis_server("system"), directory=work / "redis")
    server.start()
    pg: Any = None
    try:
        admin = args.pg_url
        if admin is None:
            admin, pg = _pgserver(work / "pg")
        client = redis.Redis.from_url(server.url, decode_responses=True)
        redis_pid = server.process.pid if server.process is not None else None
        bodies = list(wire_events(args.events))
        check_sample(bodies)
        key = secrets.token_hex(16)
        batch_max = {} if args.batch_max is None else {"batch_max": args.batch_max}
        results = {}
        for engine in ("sqlite", "postgresql"):
            db: Any = work / "drain.db"
            if engine == "postgresql":
                db = anyio.run(_new_database, admin)
            s = Settings(redis_url=server.url, db=db, stream=f"pgdrain:{engine}",
                         group="bench", consumer=f"bench-{engine}", **batch_max,
                         trim_keep_s=0, channel_key=key,
                         writer_process=engine == "sqlite" or not args.pg_in_process)  # fmt: skip
            results[engine] = drain_once(client, s, bodies, work / f"{engine}.log", redis_pid)
            print(engine, results[engine], flush=True)
            time.sleep(0.5)
        client.close()
        ratio = results["postgresql"]["events_per_s"] / results["sqlite"]["events_per_s"]
        print(f"PostgreSQL drains at {ratio:.2f}x SQLite's events/s")
        return 0
    finally:
        server.stop()
        if pg is not None:
            pg.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
