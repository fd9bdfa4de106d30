"""What the ``status`` command reports: counters, Redis backlog and the database.

Every key is documented in ``docs/request-channel.md``.
"""

from __future__ import annotations

import os
import socket
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from contracts.redisurl import mask_url
from worker.consume import Worker
from worker.partitions import PartitionedWorker
from worker.stats import Stats

RATE_WINDOW_S = 60.0
LAG_SCAN_LIMIT = 1000


def package_version() -> str:
    try:
        return version("tradescribe")
    except PackageNotFoundError:
        return "unknown"


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def events_per_second(stats: Stats, now_mono: float) -> float:
    """New events committed per second over the last minute (or since start)."""
    window = min(RATE_WINDOW_S, max(time.time() - stats.started_at, 1e-3))
    commits = stats.commits
    if commits.maxlen is not None and len(commits) == commits.maxlen:
        window = min(window, max(now_mono - commits[0][0], 1e-3))
    recent = sum(n for at, n in commits if at >= now_mono - window)
    return round(recent / window, 3)


def counters(stats: Stats) -> dict[str, Any]:
    """The in-memory counters: what the heartbeat holds and what logs carry."""
    now = time.time()
    latencies = list(stats.commit_ms)
    sizes = list(stats.batch_sizes)
    size_p50 = percentile([float(n) for n in sizes], 50)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return {
        "uptime_s": round(now - stats.started_at, 3),
        "committed_events": stats.committed,
        "committed_by_type": dict(sorted(stats.by_type.items())),
        "duplicates": stats.duplicates,
        "dead_letters_since_start": stats.dead_letters,
        "batches": stats.batches,
        "events_per_s": events_per_second(stats, time.monotonic()),
        "last_commit_at": stats.last_commit_at,
        "last_commit_age_s": _age(stats.last_commit_at, now),
        "last_stream_id": stats.last_stream_id,
        "batch_size_p50": None if size_p50 is None else int(size_p50),
        "batch_size_max": max(sizes) if sizes else None,
        "commit_ms_p50": None if p50 is None else round(p50, 3),
        "commit_ms_p99": None if p99 is None else round(p99, 3),
        "last_error": stats.last_error,
        "last_error_at": stats.last_error_at,
        "last_error_age_s": _age(stats.last_error_at, now),
    }


def identity(worker: Worker) -> dict[str, Any]:
    s = worker.settings
    return {
        "worker_id": f"{s.consumer}@{socket.gethostname()}:{os.getpid()}",
        "consumer": s.consumer,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "version": package_version(),
        "redis_url": mask_url(s.redis_url),
        "stream": s.stream,
        "group": s.group,
        **held_partitions(worker),
        "at": time.time(),
    }


def held_partitions(worker: Worker) -> dict[str, Any]:
    """``partitions``: the partitions a worker of partitions holds now (none for a
    single worker, whose status and heartbeat keep their keys as they were)."""
    if not isinstance(worker, PartitionedWorker):
        return {}
    return {"partitions": sorted(worker.lanes)}


def backlog_streams(worker: Worker) -> list[str]:
    """The streams whose backlog is the worker's: its stream, or the partitions it holds."""
    if isinstance(worker, PartitionedWorker):
        return [worker.streams[p] for p in sorted(worker.lanes)]
    return [worker.stream]


async def collect_status(worker: Worker) -> dict[str, Any]:
    """The full status: identity, counters, the Redis backlog and the database."""
    status = {**identity(worker), **counters(worker.stats)}
    status.update(await redis_backlog(worker))
    status.update(await database_status(worker))
    return status


async def redis_backlog(worker: Worker) -> dict[str, Any]:
    """Pending entries, the oldest one's age, and the entries not yet read (lag); summed
    over the partitions a worker of partitions holds."""
    s = worker.settings
    out: dict[str, Any] = {
        "pending": None,
        "oldest_pending_id": None,
        "oldest_pending_age_s": None,
        "lag": None,
        "lag_source": None,
        "redis_version": None,
        "redis_error": None,
    }
    try:
        parts = []
        for stream in backlog_streams(worker):
            parts.append(
                {
                    **await pending_summary(worker.redis, stream, s.group),
                    **await group_lag(worker.redis, stream, s.group),
                }
            )
        out.update(_summed(parts))
        info = await worker.redis.info("server")
        out["redis_version"] = info.get("redis_version")
    except (RedisError, OSError) as exc:
        out["redis_error"] = str(exc)
    return out


async def pending_summary(client: Any, stream: str, group: str) -> dict[str, Any]:
    summary = await client.xpending(stream, group)
    count = int(summary["pending"])
    oldest = _text(summary["min"]) if count else None
    return {
        "pending": count,
        "oldest_pending_id": oldest,
        "oldest_pending_age_s": stream_id_age(oldest),
    }


def _summed(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One stream's backlog as it is; several streams' added up (the oldest pending entry
    of them all; lag unknown when one stream's is)."""
    if len(parts) == 1:
        return parts[0]
    pending = [p for p in parts if p["pending"]]
    oldest = max(pending, key=lambda p: p["oldest_pending_age_s"] or 0.0, default=None)
    lags = [p["lag"] for p in parts]
    sources = sorted({str(p["lag_source"]) for p in parts})
    return {
        "pending": sum(p["pending"] for p in parts),
        "oldest_pending_id": None if oldest is None else oldest["oldest_pending_id"],
        "oldest_pending_age_s": None if oldest is None else oldest["oldest_pending_age_s"],
        "lag": None if None in lags else sum(lags),
        "lag_source": ", ".join(sources) if sources else "no partition held",
    }


def stream_id_age(stream_id: str | None, now: float | None = None) -> float | None:
    """Seconds since the entry ``stream_id`` was added (its id holds the time)."""
    if not stream_id:
        return None
    ms = int(stream_id.partition("-")[0])
    return round(max(0.0, (now or time.time()) - ms / 1000), 3)


async def group_lag(client: Any, stream: str, group: str) -> dict[str, Any]:
    """Entries added but not yet delivered to the group.

    Redis 7 reports it (XINFO GROUPS ``lag``). Where it is missing (Redis 6.2) or
    unknown (nil after deletions), count the entries after ``last-delivered-id``
    with XRANGE, up to ``LAG_SCAN_LIMIT`` (then ``lag_source`` says it is a floor).
    """
    groups = await client.xinfo_groups(stream)
    ours = next((g for g in groups if _text(g["name"]) == group), None)
    if ours is None:
        return {"lag": None, "lag_source": "no such group"}
    lag = ours.get("lag")
    if lag is not None:
        return {"lag": int(lag), "lag_source": "xinfo"}
    last = _text(ours["last-delivered-id"])
    entries = await client.xrange(stream, min=f"({last}", max="+", count=LAG_SCAN_LIMIT + 1)
    if len(entries) > LAG_SCAN_LIMIT:
        return {"lag": LAG_SCAN_LIMIT, "lag_source": "xrange (at least)"}
    return {"lag": len(entries), "lag_source": "xrange"}


async def database_status(worker: Worker) -> dict[str, Any]:
    if worker.settings.database_url is not None:  # PostgreSQL: no file, no WAL beside it
        store = worker.store
        return {
            "db_path": worker.settings.db_label,
            "db_bytes": int(await store.scalar("SELECT pg_database_size(current_database())")),
            "wal_bytes": None,
            "schema_version": await store.schema_version(),
            "events_stored": int(await store.scalar("SELECT coalesce(max(seq), 0) FROM events")),
            "dead_letters": int(await store.scalar("SELECT count(*) FROM dead_letters")),
        }
    path = Path(worker.settings.db)
    wal = path.with_name(path.name + "-wal")
    store = worker.store
    return {
        "db_path": str(path.resolve()),
        "db_bytes": _size(path),
        "wal_bytes": _size(wal),
        "schema_version": await store.schema_version(),
        "events_stored": int(await store.scalar("SELECT coalesce(max(seq), 0) FROM events")),
        "dead_letters": int(await store.scalar("SELECT count(*) FROM dead_letters")),
    }


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _age(at: float | None, now: float) -> float | None:
    return None if at is None else round(max(0.0, now - at), 3)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
