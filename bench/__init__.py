"""``tradescribe bench``: the worker against the ceiling and against the old way.

See ``docs/benchmark.md`` for what each phase measures and how.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from bench.errors import BenchError


def bench(
    quick: Annotated[
        bool, typer.Option("--quick", help="Small sizes (under a minute), as CI runs it.")
    ] = False,
    json_file: Annotated[
        Path | None,
        typer.Option("--json", metavar="FILE", help="Also write every figure as JSON to FILE."),
    ] = None,
    workdir: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Directory for the databases, made if missing and kept after "
            "(default: a temporary one, removed after).",
        ),
    ] = None,
    smoke: Annotated[bool, typer.Option("--smoke", hidden=True)] = False,
) -> None:
    """Measure the worker: drain rate vs a bare SQLite loop, vs bots writing SQLite
    themselves, publish latency, scale with history, memory.

    Starts its own redis-server and worker processes; touches nothing else. The
    full run takes several minutes and a few GB of disk; --quick takes under a minute.
    """
    from bench.report import render, write_json
    from bench.run import FULL, QUICK, SMOKE, run_bench

    if json_file is not None and not json_file.parent.is_dir():
        raise BenchError(f"cannot write --json {json_file}: {json_file.parent} is not a directory")
    if workdir is not None:
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BenchError(f"cannot use --dir {workdir}: {exc.strerror or exc}") from None
    sizes = SMOKE if smoke else QUICK if quick else FULL
    console = Console(stderr=True)
    own = workdir is None
    where = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="tradescribe-bench-"))
    try:
        figures = run_bench(where, sizes, console, quick or smoke)
    finally:
        if own:
            shutil.rmtree(where, ignore_errors=True)
    rows = [(label, figures.get(key)) for label, key in _ROWS]
    wal = f"{figures['drain_wal_max_mb']:.1f} / {figures['drain_wal_end_mb']:.1f}"
    rows += [("drain: WAL MiB, largest / at the last ack", wal)]
    rows += _cpu_rows(figures)
    rows += [(f"drain with {int(k):,} stored, events/s", v) for k, v in figures["scale"].items()]
    rows += _read_rows(figures.get("reads"))
    rows += _http_rows(figures.get("http"))
    rows += _pg_rows(figures.get("postgres"))
    render(figures, rows, Console())
    if json_file is not None:
        write_json(json_file, figures)


_ROWS = [
    ("drain, events/s (empty database)", "drain_events_per_s"),
    ("ceiling, events/s (bare sqlite3)", "ceiling_events_per_s"),
    ("naive loop, events/s (same events)", "naive_events_per_s"),
    ("naive loop: CPU us/event, its process + redis", "naive_cpu_us_per_event"),
    ("old way: events/s (8 processes)", "direct_events_per_s"),
    ("old way: 'database is locked' errors", "direct_lock_errors"),
    ("old way: call p50 ms", "direct_p50_ms"),
    ("old way: call p99 ms", "direct_p99_ms"),
    ("old way: call max ms", "direct_max_ms"),
    ("publish: events/s offered (8 processes)", "publish_offered_per_s"),
    ("publish: events/s achieved", "publish_events_per_s"),
    ("publish: call p50 ms", "publish_p50_ms"),
    ("publish: call max ms", "publish_max_ms"),
    ("publish-to-commit p50 ms", "commit_p50_ms"),
    ("publish-to-commit max ms", "commit_max_ms"),
    ("worker peak RSS, drain phase (MB)", "drain_worker_rss_mb"),
    ("drain: database MiB at the end", "drain_db_mb"),
    ("backlog drained for peak RSS", "backlog_events"),
]


def _cpu_rows(figures: dict[str, Any]) -> list[tuple[str, Any]]:
    """Where the CPU went: per drained event, and the cores busy while publishing."""
    per_event = figures.get("drain_cpu_us_per_event") or {}
    cores = figures.get("publish_cores") or {}
    if not any(per_event.values()):
        return []  # no /proc: nothing was measured
    split = " / ".join(f"{per_event[k]:.1f}" for k in ("worker", "write_process", "redis"))
    busy = " / ".join(f"{cores[k]:.2f}" for k in ("publishers", "worker", "write_process", "redis"))
    return [
        ("drain: CPU us/event, event loop / write process / redis", split),
        ("publish: cores busy, bots / event loop / write process / redis", busy),
        ("publish: bot CPU us per publish() call", figures.get("publish_cpu_us_per_call")),
        (
            "publish: CPU us per iteration of the bots' pacing loop alone",
            figures.get("publish_idle_loop_cpu_us"),
        ),
        (
            "publish: calling thread's CPU us inside publish()",
            figures.get("publish_in_call_cpu_us"),
        ),
        *_linger_rows(figures.get("publish_linger"), figures.get("publish_linger_s")),
    ]


def _linger_rows(linger: dict[str, Any] | None, linger_s: Any) -> list[tuple[str, Any]]:
    """The same publishing with ``Publisher(linger_s=...)``."""
    if not linger:
        return []
    label = f"publish, linger_s={linger_s}"
    return [
        (
            f"{label}: bot CPU us per call / inside the call",
            f"{linger['publish_cpu_us_per_call']:.1f} / {linger['publish_in_call_cpu_us']:.1f}",
        ),
        (
            f"{label}: call p50 / p99 ms",
            f"{linger['publish_p50_ms']:.3f} / {linger['publish_p99_ms']:.3f}",
        ),
        (f"{label}: publish-to-commit p99 ms", linger["commit_p99_ms"]),
    ]


def _read_rows(reads: dict[str, Any] | None) -> list[tuple[str, Any]]:
    if not reads:
        return [("reads", "not measured")]
    rows: list[tuple[str, Any]] = [
        ("reads: closed trades", reads["trades"]),
        ("reads: indexes on trades", reads["trade_indexes"]),
        ("reads: slowest case", reads["slowest_case"]),
    ]
    rows += [(f"read ms: {label}", ms) for label, ms in reads["median_ms"].items()]
    return rows


def _http_rows(http: dict[str, Any] | None) -> list[tuple[str, Any]]:
    if not http:
        return [("http", "not measured")]
    rows: list[tuple[str, Any]] = [
        ("http: slowest p99 / 100 ms target", http["p99_vs_target"]),
    ]
    rows += [
        (f"http {label}", f"p50 {r['p50_ms']:.0f} / p99 {r['p99_ms']:.0f} ms ({r['n']})")
        for label, r in http["routes"].items()
    ]
    rows += [
        ("http: drain alone, events/s", http["drain_alone_events_per_s"]),
        ("http: drain beside dashboards, events/s", http["drain_beside_dashboards_events_per_s"]),
        ("http: dashboard fetches during that drain", http["dashboard_fetches_during_drain"]),
        ("http: WAL MiB beside dashboards, largest / at the last ack",
         f"{http['wal_max_mb_beside_dashboards']:.1f} / "
         f"{http['wal_end_mb_beside_dashboards']:.1f}"),
        ("http: their p50 / p99 ms", f"{http['dashboard_p50_ms_during_drain'] or 0:.0f} / "
         f"{http['dashboard_p99_ms_during_drain'] or 0:.0f}"),
        ("http: serve's nice (the deploy unit's Nice=)", http["serve_nice"]),
    ]  # fmt: skip
    live = http["live"]
    for name in ("commit_to_client", "publish_to_client"):
        r = live[name]
        spread = f"p50 {r['p50_ms']:.0f} / p99 {r['p99_ms']:.0f} / max {r['max_ms']:.0f}"
        rows.append((f"http live: {name.replace('_', ' ')} ms", spread))
    rows.append(("http live: events, trades/s", f"{live['events']:,}, {live['trades_per_s']:g}"))
    return rows


def _pair(values: list[int], mean: int) -> str:
    return f"{values[0]:,} / {values[1]:,} (mean {mean:,})"


def _pg_rows(pg: dict[str, Any] | None) -> list[tuple[str, Any]]:
    if not pg:
        return [("postgres", "not measured")]
    if "skipped" in pg:
        return [("postgres", f"skipped: {pg['skipped']}")]
    one, split, two = pg["one_worker"], pg["one_worker_partitions"], pg["two_workers"]

    def cpu(run: dict[str, Any]) -> str:
        return " / ".join(f"{v:.1f}" for v in run["cpu_us_per_event"].values())

    return [
        (
            "postgres: SQLite, first and last drain, events/s",
            _pair(pg["sqlite_drains_events_per_s"], pg["sqlite_events_per_s"]),
        ),
        (
            "postgres: one worker, second and fifth drain, events/s",
            _pair(
                [one["events_per_s"], pg["one_worker_again"]["events_per_s"]],
                pg["one_worker_mean_events_per_s"],
            ),
        ),
        (
            f"postgres: one worker, {split['partitions']} partitions, events/s",
            split["events_per_s"],
        ),
        (f"postgres: two workers, {two['partitions']} partitions, events/s", two["events_per_s"]),
        ("postgres x1: CPU us/event, worker / its write process / postgres / redis", cpu(one)),
        (
            "postgres x2: CPU us/event, worker 0 / write 0 / worker 1 / write 1 / postgres / redis",
            cpu(two),
        ),
    ]


__all__ = ["bench"]
