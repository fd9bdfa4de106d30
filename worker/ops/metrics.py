"""Prometheus metrics (``--metrics-port``): the status counters, scraped over HTTP.

A collector reads ``worker.stats`` at scrape time; the Redis backlog (pending,
lag) is refreshed by :func:`refresh_backlog` in the worker's task group, since
a scrape runs in the HTTP server's thread and must not call Redis.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import anyio
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.consume import Worker
from worker.errors import ConfigError
from worker.ops.status import counters, package_version, redis_backlog

log = logging.getLogger(__name__)


GAUGES = (
    ("tradescribe_uptime_seconds", "Seconds since the worker started", "uptime_s"),
    ("tradescribe_events_per_second", "New events/s over the last minute", "events_per_s"),
    ("tradescribe_last_commit_timestamp_seconds", "Unix time of the last commit", "last_commit_at"),
    ("tradescribe_commit_ms_p50", "Median commit latency, ms", "commit_ms_p50"),
    ("tradescribe_commit_ms_p99", "99th percentile commit latency, ms", "commit_ms_p99"),
    ("tradescribe_pending_entries", "Entries delivered, not yet acknowledged", "pending"),
    (
        "tradescribe_oldest_pending_age_seconds",
        "Age of the oldest pending entry",
        "oldest_pending_age_s",
    ),
    ("tradescribe_lag_entries", "Entries not yet read by the group", "lag"),
    ("tradescribe_db_bytes", "Database file size, bytes", "db_bytes"),
    ("tradescribe_wal_bytes", "WAL file size, bytes", "wal_bytes"),
)


class WorkerCollector(Collector):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.backlog: dict[str, Any] = {}

    def collect(self) -> Iterable[Metric]:
        w = self.worker
        c = counters(w.stats)
        info = GaugeMetricFamily(
            "tradescribe_worker_info",
            "The worker",
            labels=["version", "consumer", "stream", "group"],
        )
        info.add_metric(
            [package_version(), w.settings.consumer, w.settings.stream, w.settings.group], 1
        )
        yield info
        by_type = CounterMetricFamily(
            "tradescribe_events_committed", "New events committed since start", labels=["type"]
        )
        for event_type, n in c["committed_by_type"].items():
            by_type.add_metric([event_type], n)
        yield by_type
        for name, doc, key in (
            ("tradescribe_duplicates", "Redelivered events already stored", "duplicates"),
            (
                "tradescribe_dead_letters",
                "Entries dead-lettered since start",
                "dead_letters_since_start",
            ),
            ("tradescribe_batches", "Transactions committed since start", "batches"),
        ):
            yield CounterMetricFamily(name, doc, value=c[key])
        db = w.settings.db
        values = {**c, **self.backlog, "db_bytes": _size(db)}
        values["wal_bytes"] = _size(db.with_name(db.name + "-wal"))
        for name, doc, key in GAUGES:
            if values.get(key) is not None:
                yield GaugeMetricFamily(name, doc, value=float(values[key]))


@contextlib.contextmanager
def serve_metrics(worker: Worker) -> Iterator[WorkerCollector | None]:
    """Serve ``/metrics`` on ``metrics_host:metrics_port`` while inside; no-op when unset."""
    s = worker.settings
    if s.metrics_port is None:
        yield None
        return
    registry = CollectorRegistry(auto_describe=False)
    collector = WorkerCollector(worker)
    registry.register(collector)
    try:
        server, thread = start_http_server(s.metrics_port, s.metrics_host, registry)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {s.metrics_host}:{s.metrics_port}: {exc} "
            "(choose another --metrics-port, or leave it unset)"
        ) from exc
    log.info("serving Prometheus metrics on http://%s:%d/metrics", s.metrics_host, s.metrics_port)
    try:
        yield collector
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def refresh_backlog(worker: Worker, collector: WorkerCollector | None) -> None:
    """Keep the collector's copy of pending and lag fresh (every heartbeat interval)."""
    if collector is None:
        return
    await worker.ready.wait()
    while True:
        backlog = await redis_backlog(worker)
        backlog["at"] = time.time()
        collector.backlog = backlog
        await anyio.sleep(worker.settings.heartbeat_interval_s)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None
