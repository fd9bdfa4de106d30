"""Several workers sharing the load: each holds some of K partition streams.

With ``partitions`` K > 1, bots publish each event to its source's stream
``<stream>:{p}`` (:mod:`contracts.partitions`). Every worker registers in a members
set (a sorted set scored by expiry, renewed every tick) and, from the live members
sorted by consumer name, takes its fair share of the partitions: K // n, one more for
the first K % n. For each partition it takes, it holds the partition's Redis lease and
PostgreSQL lock (:class:`worker.store.postgres.PostgresStore` with a partition) and runs
one :class:`worker.consume.Worker` on that stream, which first claims whatever the
previous owner left pending. A worker holding more than its share (another joined)
stops the surplus partitions cleanly (batch committed, acknowledged, lease released);
a dead worker's partitions are free once its lease expires (at once when it ran on this
host and its process is gone), and its membership after ``lease_ttl_ms``: the others
then take them over. One source is one partition, so its order holds.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup, TaskStatus
from redis.exceptions import RedisError

from contracts.partitions import partition_streams
from contracts.redisclient import AsyncRedis
from worker.consume import Worker, _text
from worker.entries import store_error
from worker.errors import AlreadyRunningError, LeaseLostError
from worker.lease import RedisLease
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.store.postgres import PostgresStore
    from worker.store.sqlite import SqliteStore

log = logging.getLogger(__name__)


def members_key(stream: str, group: str) -> str:
    """The sorted set of live workers of a partitioned stream and group."""
    return f"tradescribe:members:{stream}:{group}"


def fair_share(partitions: int, members: list[str], me: str) -> int:
    """How many partitions ``me`` holds among ``members`` (sorted): the shares add up
    to ``partitions`` exactly, the first ``partitions % n`` members hold one more."""
    n = max(len(members), 1)
    rank = members.index(me) if me in members else n - 1
    return partitions // n + (1 if rank < partitions % n else 0)


class PartitionedWorker(Worker):
    """A worker of ``settings.partitions`` streams; the same interface as
    :class:`Worker` (``run``, ``stop``, ``stats``, ``ready``) for the services around it.
    ``lanes`` are the partitions it holds now, each a :class:`Worker` on its stream."""

    def __init__(
        self, settings: Settings, redis: AsyncRedis, store: SqliteStore | PostgresStore
    ) -> None:
        super().__init__(settings, redis, store)
        if settings.database_url is None:
            raise ValueError("stream partitions need PostgreSQL")  # refused at the CLI first
        self.streams = partition_streams(settings.stream, settings.partitions)
        self.lanes: dict[int, Worker] = {}
        self._leaving: set[int] = set()
        self._members = members_key(settings.stream, settings.group)

    @property
    def tick_s(self) -> float:
        """How often membership is renewed and the shares are looked at again."""
        return self.settings.lease_ttl_ms / 3000

    def stop(self) -> None:
        super().stop()
        for lane in self.lanes.values():
            lane.stop()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        s = self.settings
        await self.store.migrate()  # once, before any partition's store looks
        log.info(
            "worker %s started: %d partitions of %s, group=%s db=%s",
            s.consumer,
            s.partitions,
            s.stream,
            s.group,
            s.db_label,
        )
        self.ready.set()
        task_status.started()
        try:
            async with anyio.create_task_group() as tg:
                while not self.stopping:
                    await self._balance(tg)
                    with anyio.move_on_after(self.tick_s):
                        await self.wait_stopping()
                for lane in self.lanes.values():
                    lane.stop()
        finally:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(RedisError, OSError):  # else it expires by itself
                    await self.redis.zrem(self._members, s.consumer)
            log.info(
                "worker %s stopped: %s",
                s.consumer,
                self.stats.summary(),
                extra={"counters": self.stats.totals()},
            )

    async def _balance(self, tg: TaskGroup) -> None:
        """Renew membership; give back partitions beyond the fair share, or take free
        ones up to it."""
        try:
            members = await self._renew_membership()
        except (RedisError, OSError) as exc:
            self.stats.note_error("redis unreachable", exc)
            log.warning("cannot renew membership in %s (%s)", self._members, exc)
            return
        share = fair_share(len(self.streams), members, self.settings.consumer)
        held = sorted(p for p in self.lanes if p not in self._leaving)
        for p in held[share:]:
            log.info("giving partition %s back (fair share %d)", self.streams[p], share)
            self._leaving.add(p)
            self.lanes[p].stop()
        wanted = share - len(held)
        for p in self._candidates(members):
            if wanted <= 0 or self.stopping:
                return
            if p not in self.lanes and await self._take(p, tg):
                wanted -= 1

    async def _renew_membership(self) -> list[str]:
        now_ms = int(time.time() * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self._members, {self.settings.consumer: now_ms + self.settings.lease_ttl_ms})
            pipe.zremrangebyscore(self._members, "-inf", now_ms)
            pipe.zrange(self._members, 0, -1)
            replies = await pipe.execute()
        return sorted(_text(m) for m in replies[2])

    def _candidates(self, members: list[str]) -> list[int]:
        """Every partition, starting at this worker's part of the ring, so that workers
        starting together try different partitions first."""
        k = len(self.streams)
        me = self.settings.consumer
        start = (members.index(me) * k // len(members)) if me in members else 0
        return [(start + i) % k for i in range(k)]

    async def _take(self, p: int, tg: TaskGroup) -> bool:
        """Take partition ``p`` if it is free: its lease, then its store lock; start it."""
        from worker.store.postgres import PostgresStore

        s = self.settings
        stream = self.streams[p]
        lease = RedisLease(self.redis, stream, s.group, self.identity, s.lease_ttl_ms)
        try:
            await lease.acquire()
        except AlreadyRunningError:
            return False
        except (RedisError, OSError) as exc:
            log.warning("cannot take partition %s (%s)", stream, exc)
            return False
        assert s.database_url is not None
        try:
            store = await PostgresStore.open(
                s.database_url, (p, stream), writer_process=s.writer_process
            )
        except Exception as exc:  # PostgreSQL away or refusing: try again next tick
            log.warning("cannot open PostgreSQL for partition %s (%s)", stream, exc)
            await _release(lease)
            return False
        try:
            # The lock is taken by the partition's write process, which starts in about
            # half a second (more on a loaded host): the lease is renewed meanwhile, or
            # it could expire before the lane that renews it has started.
            await _renewing(lease, store.lock_writer(self.identity))
        except BaseException as exc:
            if isinstance(exc, Exception):  # still written by another session, or lost
                log.info("cannot take partition %s yet: %s", stream, exc)
            with anyio.CancelScope(shield=True):
                await _release(lease)
                await store.close()
            if not isinstance(exc, Exception):
                raise
            return False
        lane = Worker(s, self.redis, store, stream=stream, stats=self.stats)
        lane.takes_over = True
        self.lanes[p] = lane
        tg.start_soon(self._run_lane, p, lane, lease)
        return True

    async def _run_lane(self, p: int, lane: Worker, lease: RedisLease) -> None:
        try:
            await lane.run_leased(lease)
        except Exception as exc:  # this partition stops; the balance takes it again later
            if (lost := _lost_lease(exc)) is not None:  # raised inside the lane's task group
                log.warning("partition %s: %s", lane.stream, lost)
            elif store_error(exc):  # PostgreSQL away (e.g. restarting as the lane migrated)
                log.warning("partition %s stopped: its store failed (%s)", lane.stream, exc)
            else:
                log.exception("partition %s stopped on an error", lane.stream)
            self.stats.note_error("partition", RuntimeError(f"{lane.stream} stopped"))
        finally:
            self.lanes.pop(p, None)
            self._leaving.discard(p)
            with anyio.CancelScope(shield=True):
                await lane.store.close()


async def _renewing(lease: RedisLease, step: Awaitable[None]) -> None:
    """Await ``step`` while renewing ``lease`` every third of its time to live; a lease
    lost meanwhile raises LeaseLostError once ``step`` is done."""
    lost: list[LeaseLostError] = []

    async def renew() -> None:
        while True:
            await anyio.sleep(lease.ttl_ms / 3000)
            try:
                await lease.renew()
            except LeaseLostError as exc:
                lost.append(exc)
                return
            except (RedisError, OSError) as exc:  # the lane's renewals retry the same way
                log.warning("cannot renew the lease %s (%s)", lease.key, exc)

    failed: Exception | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(renew)
        try:
            await step
        except Exception as exc:  # raised as it is, not in the task group's group
            failed = exc
        finally:
            tg.cancel_scope.cancel()
    if failed is not None:
        raise failed
    if lost:
        raise lost[0]


def _lost_lease(exc: BaseException) -> LeaseLostError | None:
    """The LeaseLostError that ``exc`` is, or that a task group's group of errors holds
    alone."""
    if isinstance(exc, LeaseLostError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found = [_lost_lease(inner) for inner in exc.exceptions]
        if found and all(f is not None for f in found):
            return found[0]
    return None


async def _release(lease: RedisLease) -> None:
    with contextlib.suppress(RedisError, OSError):  # else it expires by itself
        await lease.release()
