"""Where the microseconds go: CPU per event of each stage of the hot paths, in one
process and one stage at a time, so each figure is the stage's own.

    .venv/bin/python -m bench.stages [--events 100000] [--json FILE]

The drain (SQLite): the worker's Redis client reading the bench's event mix
(XREADGROUP of 2,000 entries, XACK), with redis-server's own CPU beside it; then the
event loop's decode, ``plan_batch`` and pickling; then the write process's unpickling
and ``write_planned`` split into the event-log insert, the merge of changes into the
entity rows (Python), the projection statements, the appended rows and the commit
(``synchronous=FULL``; WAL checkpoints happen inside commits). The publish path: one
bot's ``publish()`` in a tight loop split into building (validation, id, time), the
wire JSON and the XADD round trip.

In the real drain the stages run in two processes that overlap, each with caches
shared with the rest of the machine, and the hand-off through a pipe: ``tradescribe
bench``'s per-process figures are the ones that count; these say how they split.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import pickle
import sqlite3
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

from bench.drain import cpu_seconds, load_stream
from bench.workload import SOURCES, SourceFlow, wire_events
from contracts import Publisher
from contracts.events import to_wire
from worker.embedded import EmbeddedRedis, find_redis_server
from worker.entries import Entry, decode
from worker.store import write
from worker.store.batch import plan_batch
from worker.store.sql import INSERT_DEAD, INSERT_EVENT, SET_LAST, run_statements, writer_pragmas
from worker.store.sqlite import SqliteStore
from worker.store.writer import tune_gc

BATCH = 2000
MAX_MESSAGE_BYTES = 1 << 20


def drain_stages(server: EmbeddedRedis, events: int, db: Path) -> dict[str, float]:
    """CPU µs per event of each stage of the SQLite drain (see the module's docstring)."""
    client = redis.Redis.from_url(server.url)
    pid = server.process.pid if server.process is not None else None
    t: dict[str, float] = defaultdict(float)
    clock = time.process_time
    try:
        load_stream(client, "stages", wire_events(events))
        client.xgroup_create("stages", "g", id="0")
        server_before, started = cpu_seconds(pid), clock()
        batches = []
        while got := _read(client):
            entries: list[Entry] = [(i.decode(), fields) for i, fields in got]
            client.xack("stages", "g", *(i for i, _ in entries))
            batches.append(entries)
        t["event loop: XREADGROUP + XACK (client)"] = clock() - started
        t["redis-server: XREADGROUP + XACK"] = cpu_seconds(pid) - server_before
    finally:
        client.close()
    asyncio.run(_migrated(db))
    con = sqlite3.connect(db, isolation_level=None)
    for pragma in writer_pragmas("FULL", 5000):
        con.execute(pragma)
    cache = write.RowCache(con, 20_000)
    tune_gc()
    now = dt.datetime.now(dt.UTC).isoformat()
    for entries in batches:
        a = clock()
        good, dead, _again = decode(entries, {}, MAX_MESSAGE_BYTES)
        b = clock()
        planned = plan_batch(good, dead, now)
        c = clock()
        frame = pickle.dumps(planned, protocol=pickle.HIGHEST_PROTOCOL)
        d = clock()
        batch = pickle.loads(frame)
        e = clock()
        con.execute("BEGIN IMMEDIATE")
        con.executemany(INSERT_EVENT, batch.events)
        f = clock()
        statements = write.plan_projections(batch.changes, cache)
        g = clock()
        run_statements(con, statements)
        h = clock()
        run_statements(con, batch.appends)
        if batch.dead:
            con.executemany(INSERT_DEAD, batch.dead)
        con.execute(SET_LAST, (batch.last_stream_id,))
        i = clock()
        con.execute("COMMIT")
        j = clock()
        for name, start, end in (
            ("event loop: decode", a, b),
            ("event loop: plan_batch", b, c),
            ("event loop: pickle", c, d),
            ("write process: unpickle", d, e),
            ("write process: event-log insert", e, f),
            ("write process: merge (Python)", f, g),
            ("write process: projection statements", g, h),
            ("write process: appends, dead letters, last id", h, i),
            ("write process: commit (fsync, checkpoints)", i, j),
        ):
            t[name] += end - start
    con.close()
    return {name: seconds * 1e6 / events for name, seconds in t.items()}


def _read(client: redis.Redis) -> list[tuple[bytes, dict[bytes, bytes]]]:
    reply: Any = client.xreadgroup("g", "c", {"stages": ">"}, count=BATCH)
    return list(reply[0][1]) if reply else []


async def _migrated(db: Path) -> None:
    store = await SqliteStore.open(db)
    try:
        await store.migrate()
    finally:
        await store.close()


def publish_stages(server: EmbeddedRedis, calls: int, spool_dir: Path) -> dict[str, float]:
    """CPU µs per call of one bot's ``publish()`` in a tight loop, and of its parts."""
    flow = SourceFlow(0)
    specs = [flow.next() for _ in range(calls)]
    envelope = {"id": None, "ts": None, "account": None, "plugin_id": None, "mode": None}
    clock = time.process_time
    t: dict[str, float] = {}
    with Publisher(
        server.url, source=flow.source, account=flow.account, plugin_id=flow.plugin_id,
        mode=flow.mode, stream="stages-publish", spool_dir=spool_dir,
    ) as pub:  # fmt: skip
        pub.publish("audit.event", action="warm-up")
        core = pub._core
        started = clock()
        built = [core.build(kind, data, {}, envelope) for kind, data in specs]
        t["build (validate, id, time)"] = clock() - started
        started = clock()
        wires = [to_wire(event) for event in built]
        t["wire JSON"] = clock() - started
        started = clock()
        for event, wire in zip(built, wires, strict=True):
            pub._xadd(core.stream_of(event), wire)
        t["XADD round trip (held connection)"] = clock() - started
        for name, linger in (("publish(), whole call", 0.0), ("publish(), linger_s=0.002", 0.002)):
            timed = _timed_publishes(server.url, flow, specs, spool_dir, linger)
            t[name] = timed
    return {name: seconds * 1e6 / calls for name, seconds in t.items()}


def _timed_publishes(
    url: str, flow: SourceFlow, specs: list[tuple[str, dict[str, Any]]], spool: Path, linger: float
) -> float:
    """Process CPU seconds (all threads) of ``publish`` over ``specs``, with ``close()``."""
    with Publisher(
        url, source=flow.source, account=flow.account, plugin_id=flow.plugin_id,
        mode=flow.mode, stream="stages-publish", spool_dir=spool, linger_s=linger,
    ) as pub:  # fmt: skip
        pub.publish("audit.event", action="warm-up")
        started = time.process_time()
        for kind, data in specs:
            pub.publish(kind, data)
    return time.process_time() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__)
    parser.add_argument(
        "--events", type=int, default=100_000, help="events drained (default 100,000)"
    )
    parser.add_argument(
        "--calls", type=int, default=20_000, help="publish() calls (default 20,000)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    console = Console()
    with tempfile.TemporaryDirectory(prefix="tradescribe-stages-") as tmp:
        work = Path(tmp)
        server = EmbeddedRedis(find_redis_server("system"), directory=work / "redis")
        server.start()
        try:
            with console.status(f"drain stages: {args.events:,} events"):
                drain = drain_stages(server, args.events, work / "stages.db")
            with console.status(f"publish stages: {args.calls:,} calls"):
                publish = publish_stages(server, args.calls, work / "spool")
        finally:
            server.cleanup()
    _show(console, "drain: CPU µs per event, by stage", drain)
    _show(console, f"publish (one bot of {SOURCES}, tight loop): CPU µs per call", publish)
    if args.json:
        args.json.write_text(json.dumps({"drain": drain, "publish": publish}, indent=2))
    return 0


def _show(console: Console, title: str, figures: dict[str, float]) -> None:
    table = Table(title=title)
    table.add_column("stage")
    table.add_column("µs", justify="right")
    for name, value in figures.items():
        table.add_row(name, f"{value:.2f}")
    summed: Callable[[str], float] = lambda prefix: sum(  # noqa: E731
        v for k, v in figures.items() if k.startswith(prefix)
    )
    for prefix in ("event loop", "write process", "redis-server"):
        if summed(prefix):
            table.add_row(f"[bold]{prefix}, all stages", f"[bold]{summed(prefix):.2f}")
    console.print(table)


if __name__ == "__main__":
    raise SystemExit(main())
