"""``tradescribe bench``: the harness runs end to end and reports every figure.

Smoke only (the smallest sizes, no time assertions): the figures of a shared CI
machine mean nothing, but every phase must run and report a measured number.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bench import httpload, readdata
from bench.run import SMOKE
from bench.serve_http import CASES
from bench.workload import SourceFlow, check_sample, wire_events
from contracts.query import QUERIES
from tests.helpers import query
from worker.settings import PG_BATCH_MAX, SQLITE_BATCH_MAX

REQUIRED = (
    "drain_events_per_s",
    "ceiling_events_per_s",
    "drain_vs_ceiling",
    "direct_events_per_s",
    "publish_p99_ms",
    "commit_p99_ms",
    "worker_peak_rss_mb",
    "speedup_vs_direct",
    "scale_largest_vs_empty",
    "publish_p50_ms",
    "direct_p99_ms",
    "naive_events_per_s",
    "drain_vs_naive",
)


def bench(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRADESCRIBE_")}
    if "TRADESCRIBE_REDIS_SERVER" in os.environ:
        clean["TRADESCRIBE_REDIS_SERVER"] = os.environ["TRADESCRIBE_REDIS_SERVER"]
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "bench", *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_quick_bench_writes_every_figure_and_prints_the_targets(tmp_path: Path) -> None:
    out_file = tmp_path / "bench.json"
    where = tmp_path / "runs" / "first"  # missing: the bench makes it
    out = bench("--quick", "--smoke", "--json", str(out_file), "--dir", str(where))
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads(out_file.read_text())
    for key in REQUIRED:
        assert isinstance(figures[key], int | float), (key, figures.get(key))
        assert figures[key] > 0, (key, figures.get(key))
    # the old way's lock errors vary from run to run: the figure is the count the run reported
    assert f", {figures['direct_lock_errors']} lock errors" in out.stderr, out.stderr[-2000:]
    assert figures["drain_lost_events"] == 0
    assert figures["drain_dead_letters"] == 0
    assert figures["commit_events"] == figures["publish_events"]
    # where the CPU went (Linux /proc): the worker's two processes and the bots used some
    parts = {"worker", "write_process", "redis"}
    assert set(figures["drain_cpu_us_per_event"]) == parts
    assert set(figures["publish_cores"]) == parts | {"publishers"}
    if sys.platform.startswith("linux"):
        assert figures["drain_cpu_us_per_event"]["worker"] > 0
        assert figures["publish_cores"]["publishers"] > 0
        assert figures["publish_cores"]["worker"] > 0
        assert figures["publish_cpu_us_per_call"] > 0
        assert figures["publish_in_call_cpu_us"] > 0
        assert figures["publish_idle_loop_cpu_us"] > 0
        assert "cores busy" in out.stdout
    # the same publishing with a lingering Publisher: every event committed, figures kept
    linger = figures["publish_linger"]
    assert linger["commit_events"] == linger["publish_events"] > 0
    assert linger["publish_p99_ms"] > 0
    assert figures["publish_linger_s"] > 0
    assert "linger_s=" in out.stdout
    assert len(figures["scale"]) == 3
    assert all(v > 0 for v in figures["scale"].values())
    machine = figures["machine"]
    assert machine["cpu_count"] > 0
    assert machine["sqlite"]
    assert machine["redis"] != "?"
    assert figures["date"].startswith("20")
    keys = {v["key"] for v in figures["targets"]}
    assert keys >= {"drain_vs_naive", "drain_cpu_us_per_event_total", "commit_p99_ms"}
    assert "drain_events_per_s" not in keys  # machine-dependent: reported, never a target
    assert figures["naive_stored"] == figures["drain_events"]  # the same events, all stored
    naive = figures["naive_events_per_s"]
    assert figures["drain_vs_naive"] == figures["drain_events_per_s"] / naive
    assert "drain / naive loop" in out.stdout
    # the WAL watched while draining: some seen, and the target row printed
    assert 0 < figures["drain_wal_max_mb"] <= 64
    assert figures["wal_max_mb"] >= figures["drain_wal_max_mb"]
    assert "WAL file" in out.stdout
    assert "drain / ceiling" in out.stdout
    assert "target" in out.stdout
    assert "Traceback" not in out.stderr
    assert_ceiling_wrote_the_workers_rows(where / "drain.db", where / "ceiling.db")
    # the reads phase: every query case timed, the slowest against its target
    reads = figures["reads"]
    assert reads["trades"] > 0
    assert reads["trade_indexes"] == 4
    assert len(reads["median_ms"]) == len(readdata.cases(reads["trades"]))
    assert {label.split()[0] for label in reads["median_ms"]} == set(QUERIES)
    assert all(ms > 0 for ms in reads["median_ms"].values())
    assert figures["reads_slowest_ms"] == reads["slowest_ms"] == max(reads["median_ms"].values())
    assert "reads_slowest_ms" in {v["key"] for v in figures["targets"]}
    assert "slowest read query" in out.stdout
    assert not (where / "reads.db").exists()  # removed after the HTTP phase
    # the HTTP phase: serve on that database, 20 clients, the drain beside dashboards
    http = figures["http"]
    labels = {f"{who} {path}" for who, path in CASES}
    assert http["routes"]
    assert set(http["routes"]) <= labels
    assert all(0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"] for r in http["routes"].values())
    assert figures["http_slowest_p99_ms"] == max(r["p99_ms"] for r in http["routes"].values())
    assert figures["http_p99_vs_target"] == figures["http_slowest_p99_ms"] / 100
    assert http["drain_alone_events_per_s"] > 0
    assert http["drain_beside_dashboards_events_per_s"] > 0
    assert figures["http_drain_ratio"] == (
        http["drain_beside_dashboards_events_per_s"] / http["drain_alone_events_per_s"]
    )
    assert http["dashboard_fetches_during_drain"] > 0
    assert http["serve_nice"] == httpload.SERVE_NICE  # as the deploy unit runs it
    live = http["live"]  # each published event heard on the live stream, timed
    assert live["events"] == 2 * max(int(SMOKE.http_s * httpload.LIVE_TRADES_PER_S), 1)
    for spread in (live["commit_to_client"], live["publish_to_client"]):
        assert 0 < spread["p50_ms"] <= spread["p99_ms"] <= spread["max_ms"]
    assert figures["http_commit_to_client_p99_ms"] == live["commit_to_client"]["p99_ms"]
    assert "commit to client p99" in out.stdout
    assert {"http_slowest_p99_ms", "http_drain_ratio"} <= {v["key"] for v in figures["targets"]}
    assert "HTTP p99, slowest route" in out.stdout
    assert "drain, 20 dashboards/alone" in out.stdout
    assert not (tmp_path / "http-tokens.db").exists()
    assert_postgres_phase(figures, out.stdout)


def assert_postgres_phase(figures: dict[str, Any], stdout: str) -> None:
    """SQLite, PostgreSQL with one worker (from one stream, and holding four partitions)
    and with two drained the same events; or the phase says why it was skipped (no
    PostgreSQL could start)."""
    pg = figures["postgres"]
    if "skipped" in pg:
        assert "no PostgreSQL could be started" in pg["skipped"]
        return
    one, split, two = pg["one_worker"], pg["one_worker_partitions"], pg["two_workers"]
    assert one["stored"] == split["stored"] == two["stored"] == pg["events"] > 0
    assert (one["workers"], one["partitions"], two["workers"], two["partitions"]) == (1, 1, 2, 4)
    assert (split["workers"], split["partitions"]) == (1, 4)
    assert figures["pg_partitions_vs_one"] == split["events_per_s"] / one["events_per_s"]
    # each engine at its own default batch size (the test runs without TRADESCRIBE_*)
    assert pg["batch_max"] == {"sqlite": SQLITE_BATCH_MAX, "postgresql": PG_BATCH_MAX}
    # the ratio of two means, each engine drained twice: S P ... P S
    again = pg["one_worker_again"]
    assert again["stored"] == pg["events"]
    assert (again["workers"], again["partitions"]) == (1, 1)
    sqlite_drains = pg["sqlite_drains_events_per_s"]
    assert len(sqlite_drains) == 2
    assert all(v > 0 for v in sqlite_drains)
    assert pg["sqlite_events_per_s"] == round(sum(sqlite_drains) / 2)
    assert pg["one_worker_mean_events_per_s"] == round(
        (one["events_per_s"] + again["events_per_s"]) / 2
    )
    assert figures["pg_vs_sqlite"] == (
        pg["one_worker_mean_events_per_s"] / pg["sqlite_events_per_s"]
    )
    parts = ("worker_0", "write_process_0", "worker_1", "write_process_1", "postgres")
    assert set(two["cpu_us_per_event"]) == {*parts, "redis"}
    if sys.platform.startswith("linux"):
        assert all(two["cpu_us_per_event"][k] > 0 for k in parts)
        assert one["cpu_us_per_event"]["postgres"] > 0
        assert one["cpu_us_per_event"]["write_process_0"] > 0  # the commits run there
    assert "pg_vs_sqlite" in {v["key"] for v in figures["targets"]}
    assert "drain, PostgreSQL/SQLite" in stdout
    assert f"{split['events_per_s']:,}" in stdout  # its row (the label wraps in the table)


def assert_ceiling_wrote_the_workers_rows(worker_db: Path, ceiling_db: Path) -> None:
    """The ceiling is honest only if it writes what the worker wrote (bar commit times)."""
    tables = {
        "trades": "source, trade_id",
        "signals": "source, signal_id",
        "positions": "1, 2, 3, 4",
        "daily_stats": "1, 2, 3, 4, 5",
        "trade_status_history": "event_id",
        "journal_entries": "event_id",
    }
    for table, order in tables.items():
        sql = f"SELECT * FROM {table} ORDER BY {order}"
        assert query(worker_db, sql) == query(ceiling_db, sql), table
    cols = "event_id, type, source, account, plugin_id, mode, subject, ts, stream_id, body"
    sql = f"SELECT {cols} FROM events ORDER BY event_id"
    assert query(worker_db, sql) == query(ceiling_db, sql)


def test_workload_is_valid_and_has_the_issues_mix() -> None:
    bodies = list(wire_events(5000))
    assert check_sample(bodies, every=1) == 5000  # every one parses
    kinds = Counter(json.loads(b)["type"] for b in bodies)
    share = {k: v / len(bodies) for k, v in kinds.items()}
    assert 0.17 < share["trade.opened"] < 0.23
    assert 0.37 < share["trade.updated"] < 0.43
    assert 0.17 < share["trade.closed"] < 0.23
    assert 0.08 < share["signal.emitted"] + share["signal.closed"] < 0.12
    assert len({json.loads(b)["source"] for b in bodies}) == 8


def test_old_way_and_publishers_replay_the_drains_trades() -> None:
    mixed = [json.loads(b) for b in wire_events(2000)]
    of_bot_3 = [(e["type"], e["data"]) for e in mixed if e["source"] == "bench-bot-3"]
    flow = SourceFlow(3)
    assert [flow.next() for _ in of_bot_3] == of_bot_3


def test_bench_json_into_a_missing_directory_is_one_clear_line(tmp_path: Path) -> None:
    out = bench("--quick", "--json", str(tmp_path / "nope" / "b.json"))
    assert out.returncode == 1
    assert "cannot write --json" in out.stderr
    assert "is not a directory" in out.stderr
    assert "Traceback" not in out.stderr


def test_bench_dir_that_is_a_file_is_one_clear_line(tmp_path: Path) -> None:
    taken = tmp_path / "a-file"
    taken.write_text("")
    out = bench("--quick", "--dir", str(taken))
    assert out.returncode == 1
    assert f"cannot use --dir {taken}: File exists" in out.stderr
    assert "Traceback" not in out.stderr


def test_stages_split_both_hot_paths_into_measured_parts(tmp_path: Path) -> None:
    from bench import stages

    out = tmp_path / "stages.json"
    assert stages.main(["--events", "4000", "--calls", "300", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    drain, publish = figures["drain"], figures["publish"]
    assert {k.split(":")[0] for k in drain} == {"event loop", "write process", "redis-server"}
    assert len(drain) == 11
    assert all(v > 0 for k, v in drain.items() if not k.startswith("redis-server"))
    assert len(publish) == 5
    assert all(v > 0 for v in publish.values())
