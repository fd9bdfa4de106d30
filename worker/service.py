"""Wiring: build the Redis client and the store from settings, run the worker.

This is where factories like ``from_url`` live; everything below takes built
clients.
"""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from contracts.redisclient import AsyncRedis, async_client
from worker.consume import Worker
from worker.errors import PartitionsNeedPostgresError
from worker.ops import answers as serve_commands  # noqa: F401  (registers serve --remote's)
from worker.ops import queries as query_commands  # noqa: F401  (registers the query and wait commands)
from worker.ops.health import keep_heartbeat, log_ready
from worker.ops.metrics import refresh_backlog, serve_metrics
from worker.ops.responder import serve_requests
from worker.ops.sdnotify import notify_systemd
from worker.ops.trust import worker_key
from worker.partitions import PartitionedWorker
from worker.settings import Settings
from worker.store.backup import backup_periodically
from worker.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from worker.store.postgres import PostgresStore

log = logging.getLogger(__name__)


def redis_client(settings: Settings) -> AsyncRedis:
    """The worker's client: bytes in and out, socket timeout above the read block; a
    ``RedisCluster`` for a ``redis+cluster://`` URL."""
    return async_client(
        settings.redis_url,
        socket_timeout=settings.block_ms / 1000 + 5,
        socket_connect_timeout=5,
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,
    )


async def open_store(settings: Settings) -> SqliteStore | PostgresStore:
    """The engine the settings name: PostgreSQL for a database URL, else the SQLite file."""
    if settings.database_url is not None:
        from worker.store.postgres import PostgresStore

        return await PostgresStore.open(
            settings.database_url, writer_process=settings.writer_process
        )
    return await SqliteStore.open(
        settings.db,
        synchronous=settings.synchronous,
        busy_timeout_ms=settings.busy_timeout_ms,
        cache_rows=max(settings.cache_rows, 3 * settings.batch_max),
        writer_process=settings.writer_process,
    )


async def run_worker(
    settings: Settings,
    *,
    handle_signals: bool = True,
    task_status: TaskStatus[Worker] = anyio.TASK_STATUS_IGNORED,
) -> Worker:
    """Run the worker until it is stopped (SIGTERM/SIGINT when ``handle_signals``)."""
    if settings.partitions > 1 and settings.database_url is None:
        raise PartitionsNeedPostgresError(
            f"partitions {settings.partitions} needs PostgreSQL (--db postgresql://...): "
            "SQLite has one writer, so keep partitions at 1 with it (docs/scaling.md)"
        )
    store = await open_store(settings)
    client = redis_client(settings)
    kind = PartitionedWorker if settings.partitions > 1 else Worker
    worker = kind(settings, client, store)
    try:
        key = worker_key(settings)  # made beside the database if none is configured
        with serve_metrics(worker) as metrics:
            async with anyio.create_task_group() as tg:
                if handle_signals:
                    tg.start_soon(
                        _stop_on_signals, worker, tg.cancel_scope, settings.shutdown_grace_s
                    )
                tg.start_soon(serve_requests, worker, key)
                tg.start_soon(keep_heartbeat, worker, key)
                tg.start_soon(log_ready, worker)
                tg.start_soon(refresh_backlog, worker, metrics)
                tg.start_soon(notify_systemd, worker)
                if settings.database_url is None:  # PostgreSQL: pg_dump (docs/postgresql.md)
                    tg.start_soon(backup_periodically, settings)
                task_status.started(worker)  # await worker.ready.wait() to know it reads
                await worker.run()
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()
            await client.aclose()
    return worker


async def _stop_on_signals(worker: Worker, scope: anyio.CancelScope, grace_s: float) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if worker.stopping:
                log.warning("second %s: stopping now", signal.Signals(signum).name)
                scope.cancel()
                return
            log.info("%s: finishing the batch in hand, then stopping", signal.Signals(signum).name)
            worker.stop()
            scope.deadline = anyio.current_time() + grace_s
