"""The benchmark, phase by phase, in one run so the figures share one machine state.

1. drain: N events on the stream, a fresh worker drains them into an empty database;
2. ceiling: the same rows by a bare sqlite3 loop; the naive loop: the same events by
   what a user could write in an afternoon (``naive.py``);
3. the old way: 8 processes committing each trade into one SQLite file;
4. publishers: 8 processes at 1,250 events/s each through ``Publisher``, a worker running;
5. scale: the drain again with history already in the database;
6. backlog: the worker's peak RSS draining a large backlog;
7. reads: every read-side query case timed on 1,000,000 closed trades (``reads.py``);
8. http: ``tradescribe serve`` on that database, 20 clients, the drain beside 20
   dashboards, and commit-to-client latency on the live stream (``httpload.py``);
9. postgres: the drain into SQLite, then PostgreSQL with one worker and with two
   (``pgphase.py``; skipped, with the reason, where no PostgreSQL can start).
"""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis
from pydantic import ValidationError
from rich.console import Console

from bench import ceiling, drain, httpload, naive, oldway, pgphase, reads, report, scale
from bench.errors import BenchError
from bench.workload import SOURCES, check_sample, wire_events
from worker.embedded import EmbeddedRedis, find_redis_server
from worker.settings import Settings


@dataclass(frozen=True)
class Sizes:
    drain: int
    prefills: tuple[int, ...]
    backlog: int
    direct_s: float
    publish_s: float
    publish_rate: float = 10_000.0  # offered in total, split over the 8 publishers
    reads_trades: int = reads.FULL_TRADES  # closed trades the reads phase queries
    http_s: float = 30.0  # the HTTP clients' time on the routes
    http_drain: int = 200_000  # events drained alone, then again beside the dashboards
    pg_drain: int = 100_000  # events of each drain of the PostgreSQL phase


FULL = Sizes(500_000, (1_000_000, 5_000_000), 1_000_000, 10.0, 10.0)
# backlog 0: the peak RSS is the drain phase's (no separate backlog run)
QUICK = Sizes(25_000, (50_000, 250_000), 0, 2.0, 1.5, reads_trades=reads.QUICK_TRADES,
              http_s=6.0, http_drain=25_000, pg_drain=20_000)  # fmt: skip
SMOKE = Sizes(4_000, (8_000, 40_000), 0, 1.0, 1.0, reads_trades=5_000,
              http_s=3.0, http_drain=4_000, pg_drain=4_000)  # test suite size  # fmt: skip
_BYTES_PER_EVENT = 1000  # database + WAL, generously
_BYTES_PER_READ_TRADE = 800  # the reads phase's database (removed after)


@dataclass
class Bench:
    workdir: Path
    sizes: Sizes
    console: Console
    client: redis.Redis
    url: str
    redis_pid: int | None = None  # for its CPU time

    def settings(self, name: str) -> Settings:
        """The worker's settings for one phase (TRADESCRIBE_BATCH_MAX etc. still apply)."""
        try:
            return Settings(
                redis_url=self.url,
                db=self.workdir / f"{name}.db",
                stream=f"bench:{name}",
                group="bench",
                consumer="bench",
                trim_keep_s=0,
                synchronous="FULL",
            )
        except ValidationError as exc:
            bad = "; ".join(
                f"TRADESCRIBE_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise BenchError(f"bad setting in the environment: {bad}") from exc

    def log(self, message: str) -> None:
        self.console.log(message)


def check_disk(workdir: Path, sizes: Sizes) -> None:
    events = max(sizes.prefills, default=0) + sizes.drain * (4 + len(sizes.prefills))
    events += sizes.backlog
    need = events * _BYTES_PER_EVENT + sizes.reads_trades * _BYTES_PER_READ_TRADE
    free = shutil.disk_usage(workdir).free
    if free < need:
        raise BenchError(
            f"{workdir} has {free / 1e9:.1f} GB free, the benchmark needs about "
            f"{need / 1e9:.1f} GB; pass --dir on a larger disk"
        )


def run_bench(workdir: Path, sizes: Sizes, console: Console, quick: bool) -> dict[str, Any]:
    check_disk(workdir, sizes)
    server = EmbeddedRedis(
        find_redis_server("system"),
        directory=workdir / "redis",
        appendonly=True,  # as deployed: AOF on, fsync every second
        extra_args=("--auto-aof-rewrite-percentage", "0"),
    )
    server.start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        pid = server.process.pid if server.process is not None else None
        bench = Bench(workdir, sizes, console, client, server.url, pid)
        figures: dict[str, Any] = {
            "quick": quick,
            "date": report.today(),
            "machine": report.machine(server.version()),
            "sizes": asdict(sizes),
        }
        drained = phase_drain(bench, figures)
        phase_ceiling(bench, figures, drained)
        phase_naive(bench, figures, drained[0])
        del drained
        phase_direct(bench, figures)
        phase_publish(bench, figures)
        phase_scale(bench, figures)
        phase_backlog(bench, figures)
        phase_reads(bench, figures, quick)
        phase_http(bench, figures)
        pgphase.phase_postgres(bench, figures)
        figures["targets"] = report.verdicts(figures)
        return figures
    finally:
        client.close()
        server.cleanup()


def phase_drain(bench: Bench, figures: dict[str, Any]) -> tuple[list[str], list[str]]:
    n = bench.sizes.drain
    with bench.console.status(f"building {n:,} events from {SOURCES} bots"):
        bodies = list(wire_events(n))
        checked = check_sample(bodies)
    bench.log(f"built {n:,} events; {checked:,} of them validated with parse_event")
    s = bench.settings("drain")
    with bench.console.status(f"drain: {n:,} events on the stream, one worker"):
        result = drain.run_drain(
            bench.client, s, bodies, bench.workdir / "drain.log", 0, bench.redis_pid
        )
    figures.update(
        drain_events=result.events,
        drain_seconds=result.seconds,
        drain_events_per_s=result.events_per_s,
        drain_lost_events=result.events - result.stored - result.dead_letters,
        drain_dead_letters=result.dead_letters,
        drain_worker_rss_mb=result.peak_rss_mb,
        drain_cpu_us_per_event=result.cpu_us_per_event,
        drain_cpu_us_per_event_total=sum(result.cpu_us_per_event.values()) or None,
        drain_wal_max_mb=result.wal_max_mb,
        drain_wal_end_mb=result.wal_end_mb,
        drain_db_mb=result.db_mb,
        batch_max=s.batch_max,
    )
    figures["scale"] = {"0": result.events_per_s}
    bench.log(f"drain: {result.events_per_s:,.0f} events/s ({result.seconds:.2f} s)")
    return bodies, result.stream_ids


def phase_ceiling(
    bench: Bench, figures: dict[str, Any], drained: tuple[list[str], list[str]]
) -> None:
    bodies, ids = drained
    batch_max = int(figures["batch_max"])
    with bench.console.status("ceiling: building the same rows"):
        batches = ceiling.build_batches(bodies, ids, batch_max)
    with bench.console.status("ceiling: bare sqlite3 executemany, commit per batch"):
        result = ceiling.run_ceiling(bench.workdir / "ceiling.db", batches, len(bodies))
    figures.update(
        ceiling_events_per_s=result.events_per_s,
        ceiling_seconds=result.seconds,
        ceiling_rows=result.rows,
        drain_vs_ceiling=figures["drain_events_per_s"] / result.events_per_s,
    )
    bench.log(f"ceiling: {result.events_per_s:,.0f} events/s ({result.rows:,} rows)")


def phase_naive(bench: Bench, figures: dict[str, Any], bodies: list[str]) -> None:
    """The same events through the naive loop (in the bench process), timed the same way."""
    stream = "bench:naive"
    bench.client.delete(stream)
    drain.load_stream(bench.client, stream, bodies)
    bench.client.xgroup_create(stream, "bench", id="0")
    cpu_before = time.process_time(), drain.cpu_seconds(bench.redis_pid)
    with bench.console.status("naive loop: XREADGROUP 2,000, parse_event, executemany, XACK"):
        result = naive.run_naive(
            bench.client, stream, "bench", bench.workdir / "naive.db", len(bodies)
        )
    loop_cpu = time.process_time() - cpu_before[0]
    redis_cpu = drain.cpu_seconds(bench.redis_pid) - cpu_before[1]
    bench.client.delete(stream)
    (bench.workdir / "naive.db").unlink(missing_ok=True)
    figures.update(
        naive_events_per_s=result.events_per_s,
        naive_seconds=result.seconds,
        naive_stored=result.stored,
        naive_cpu_us_per_event=(loop_cpu + redis_cpu) * 1e6 / result.events,
        drain_vs_naive=figures["drain_events_per_s"] / result.events_per_s,
    )
    bench.log(f"naive loop: {result.events_per_s:,.0f} events/s ({result.seconds:.2f} s)")


def phase_direct(bench: Bench, figures: dict[str, Any]) -> None:
    seconds = bench.sizes.direct_s
    with bench.console.status(f"old way: {SOURCES} processes committing each trade, {seconds}s"):
        results = oldway.run_direct(bench.workdir / "oldway.db", seconds)
    done = sum(r.done for r in results)
    wall = max(r.seconds for r in results)
    lat = oldway.latency_summary(results)
    figures.update(
        direct_events_per_s=done / wall,
        direct_events=done,
        direct_lock_errors=sum(r.errors for r in results),
        direct_p50_ms=lat["p50_ms"],
        direct_p99_ms=lat["p99_ms"],
        direct_max_ms=lat["max_ms"],
        direct_busy_timeout_ms=int(oldway.BUSY_TIMEOUT_S * 1000),
    )
    figures["speedup_vs_direct"] = figures["drain_events_per_s"] / figures["direct_events_per_s"]
    bench.log(
        f"old way: {figures['direct_events_per_s']:,.0f} events/s, "
        f"{figures['direct_lock_errors']} lock errors"
    )


PUBLISH_LINGER_S = 0.002  # the lingering publishers' run: Publisher(linger_s=...)


def phase_publish(bench: Bench, figures: dict[str, Any]) -> None:
    """8 bots publishing while a worker commits: each ``publish()`` a round trip (the
    default), then again with ``linger_s`` (the call writes the spool file and returns;
    a thread pipelines what gathered)."""
    figures.update(_publish_run(bench, "publish", 0.0))
    lingering = _publish_run(bench, "publish-linger", PUBLISH_LINGER_S)
    figures.update(
        publish_linger_s=PUBLISH_LINGER_S,
        publish_linger={k: v for k, v in lingering.items() if k != "publish_offered_per_s"},
    )


def _publish_run(bench: Bench, name: str, linger_s: float) -> dict[str, Any]:
    sz = bench.sizes
    s = bench.settings(name)
    bench.client.xgroup_create(s.stream, s.group, id="0", mkstream=True)
    child = drain.WorkerChild(s, bench.workdir / f"{name}.log")
    try:
        drain.wait_reading(bench.client, child)
        rate = sz.publish_rate / SOURCES
        cpu_before, started = drain.cpu_split(child, bench.redis_pid), time.monotonic()
        with bench.console.status(
            f"{name}: {SOURCES} x {rate:,.0f} events/s, {sz.publish_s}s, linger {linger_s}s"
        ):
            results = oldway.run_publishers(bench.url, s.stream, rate, sz.publish_s, linger_s)
        last = str(bench.client.xinfo_stream(s.stream)["last-generated-id"])
        drain.wait_drained(bench.client, child, last, timeout_s=120)
        used = drain.cpu_used(cpu_before, drain.cpu_split(child, bench.redis_pid))
        window = time.monotonic() - started
    finally:
        child.stop()
    lat = oldway.latency_summary(results)
    bots_cpu = sum(r.cpu_s for r in results)
    commit = commit_latencies(s.db)
    sent = sum(r.done for r in results)
    bench.log(
        f"{name}: p99 {lat['p99_ms']:.3f} ms, {bots_cpu * 1e6 / max(sent, 1):.1f} us CPU "
        f"per call; publish-to-commit p99 {oldway.percentile(commit, 99):.1f} ms "
        f"({len(commit):,} events)"
    )
    return dict(
        publish_offered_per_s=sz.publish_rate,
        publish_events_per_s=sent / max(r.seconds for r in results),
        publish_events=sent,
        publish_errors=sum(r.errors for r in results),
        publish_p50_ms=lat["p50_ms"],
        publish_p99_ms=lat["p99_ms"],
        publish_max_ms=lat["max_ms"],
        commit_p50_ms=oldway.percentile(commit, 50),
        commit_p99_ms=oldway.percentile(commit, 99),
        commit_max_ms=commit[-1] if commit else 0.0,
        commit_events=len(commit),
        # what kept the cores busy: CPU seconds over the phase's wall time (the bots'
        # counted over their timed loops and close()); and the bots' CPU per call
        publish_cores={"publishers": bots_cpu / window} | {k: v / window for k, v in used.items()},
        publish_cpu_us_per_call=bots_cpu * 1e6 / max(sent, 1),
        publish_idle_loop_cpu_us=sum(r.idle_cpu_us for r in results) / max(len(results), 1),
        # the calling thread's CPU between entering and leaving publish()
        publish_in_call_cpu_us=sum(r.in_call_cpu_us for r in results) / max(sent, 1),
    )


def commit_latencies(db: Path) -> list[float]:
    """committed_at - ts per event, sorted, in ms (committed_at: start of its transaction)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT ts, committed_at FROM events WHERE type != 'audit.event'"
        ).fetchall()
    finally:
        con.close()
    parse = dt.datetime.fromisoformat
    return sorted((parse(c) - parse(t)).total_seconds() * 1000 for t, c in rows)


def phase_scale(bench: Bench, figures: dict[str, Any]) -> None:
    """The drain into databases holding history. The largest is compared with an empty
    database drained just before it (seconds apart, not minutes as the first phase is:
    this machine's speed drifts by 10-20% over a run)."""
    n = bench.sizes.drain
    s = bench.settings("scale")
    rate = empty = figures["drain_events_per_s"]
    for seed, total in enumerate(bench.sizes.prefills, start=11):
        with bench.console.status(f"scale: prefilling {total:,} events"):
            scale.prefill(s.db, total)
        stored = scale.stored_events(s.db)
        if total == max(bench.sizes.prefills):
            again = bench.settings("scale-empty")
            with bench.console.status(f"scale: draining {n:,} events into an empty database"):
                empty = drain.run_drain(
                    bench.client, again, wire_events(n, seed=seed), bench.workdir / "e.log", 0
                ).events_per_s
            again.db.unlink(missing_ok=True)
            figures["scale_empty_adjacent_events_per_s"] = empty
            bench.log(f"scale: {empty:,.0f} events/s into an empty database, just before")
        with bench.console.status(f"scale: draining {n:,} events into {stored:,} stored"):
            result = drain.run_drain(
                bench.client, s, wire_events(n, seed=seed), bench.workdir / "scale.log", stored
            )
        figures["scale"][str(stored)] = result.events_per_s
        rate = result.events_per_s
        bench.log(f"scale: {result.events_per_s:,.0f} events/s with {stored:,} stored")
    figures["scale_largest_vs_empty"] = rate / empty


def phase_backlog(bench: Bench, figures: dict[str, Any]) -> None:
    n = bench.sizes.backlog
    if n == 0:
        figures.update(
            backlog_events=figures["drain_events"],
            backlog_events_per_s=figures["drain_events_per_s"],
            worker_peak_rss_mb=figures["drain_worker_rss_mb"],
        )
        return
    s = bench.settings("backlog")
    with bench.console.status(f"backlog: draining {n:,} events, watching the worker's memory"):
        result = drain.run_drain(
            bench.client, s, wire_events(n, seed=23), bench.workdir / "backlog.log", 0
        )
    figures.update(
        backlog_events=n,
        backlog_events_per_s=result.events_per_s,
        worker_peak_rss_mb=result.peak_rss_mb,
    )
    bench.log(f"backlog: peak RSS {result.peak_rss_mb:.0f} MB draining {n:,} events")


def phase_reads(bench: Bench, figures: dict[str, Any], quick: bool) -> None:
    with bench.console.status("reads: building closed trades, timing every query case"):
        result = reads.measure_reads(
            bench.workdir, quick, bench.sizes.reads_trades, bench.log, keep=True
        )
    figures["reads"] = result
    figures["reads_slowest_ms"] = result["slowest_ms"]
    bench.log(
        f"reads: slowest {result['slowest_case']} {result['slowest_ms']:.1f} ms "
        f"at {result['trades']:,} trades ({len(result['over_target'])} over target)"
    )


def phase_http(bench: Bench, figures: dict[str, Any]) -> None:
    """``tradescribe serve`` on the reads phase's database (removed after)."""
    sz = bench.sizes
    s = bench.settings("reads")  # the worker drains into reads.db, serve reads it
    try:
        with bench.console.status(
            f"http: {httpload.CLIENTS} clients for {sz.http_s:g}s, then the drain of "
            f"{sz.http_drain:,} events alone and beside {httpload.CLIENTS} dashboards, then "
            "commits timed to a live-stream client"
        ):
            result = httpload.measure_http(bench.client, s, sz.http_s, sz.http_drain, bench.log)
    finally:
        reads.remove(s.db)
    figures["http"] = result
    figures.update(
        http_slowest_p99_ms=result["slowest_p99_ms"],
        http_p99_vs_target=result["p99_vs_target"],
        http_drain_ratio=result["drain_ratio"],
        # the WAL over both drains with a worker committing: alone, and beside readers
        wal_max_mb=max(figures["drain_wal_max_mb"], result["wal_max_mb_beside_dashboards"]),
        http_commit_to_client_p99_ms=result["commit_to_client_p99_ms"],
    )
