"""The consume loop: read -> decode -> batch -> commit -> ack.

At-least-once transport, exactly-once effect: an entry is acknowledged only
after the transaction holding its effect has committed, and the event log
refuses a second copy of an id, so a redelivered entry changes nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import redis.exceptions
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream
from redis.exceptions import RedisError, ResponseError

from contracts.backoff import Backoff
from contracts.events import WIRE_FIELD
from contracts.keys import legacy_stream_key, stream_key
from contracts.redisclient import TRANSIENT_ERRORS, AsyncRedis, is_cluster
from worker.entries import Entry, bounded, decode, store_error, unstorable, without_bytes
from worker.errors import RedisSetupError
from worker.lease import RedisLease, worker_identity
from worker.settings import Settings
from worker.stats import Stats
from worker.store.sqlite import DeadLetter, Decoded, Prepared, SqliteStore, stream_order

if TYPE_CHECKING:
    from worker.store.postgres import PostgresStore

log = logging.getLogger(__name__)

_WIRE_KEY = WIRE_FIELD.encode()
_TRANSIENT_REDIS = TRANSIENT_ERRORS  # a cluster failing over, too
_UNREACHABLE = "redis unreachable"


# On PostgreSQL without a write process, entries decoded between two turns of the event
# loop (about 2 ms of CPU): the commit there is a series of round trips from this loop.
# A commit in a write process (SQLite's, PostgreSQL's) is one round trip to it: a batch
# is decoded whole.
DECODE_STEP = 200


@dataclass(slots=True)
class _Batch:
    ids: list[str]  # every stream id read, acknowledged after the commit
    good: list[Decoded]
    dead: list[DeadLetter]
    prepared: Prepared  # its rows and changes, made while the batch before it commits


class Worker:
    """The single writer of one stream. ``await worker.run()``; ``worker.stop()`` to end
    it cleanly. With stream partitions, :class:`worker.partitions.PartitionedWorker` runs
    one of these per partition it holds (``stream``), all counting into its ``stats``."""

    def __init__(
        self,
        settings: Settings,
        redis: AsyncRedis,
        store: SqliteStore | PostgresStore,
        *,
        stream: str | None = None,
        stats: Stats | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.store = store
        self.stream = settings.stream if stream is None else stream
        self.stats = Stats() if stats is None else stats
        # A partition taken over: the entries its last owner left pending are claimed
        # first (it holds no lease nor lock any more), so the source order holds.
        self.takes_over = False
        self.identity = worker_identity(settings.consumer)
        self._stopping = anyio.Event()
        self.ready = anyio.Event()
        # Stream ids read by this process and not yet acknowledged (a batch being
        # planned or committed). XAUTOCLAIM must not hand them back to us: after a
        # commit stalled longer than claim_idle_ms (lock, full disk) they would be
        # processed twice, and a dead letter stored twice.
        self._in_flight: set[str] = set()
        self._spent: list[_Batch] = []

    # -- lifecycle -------------------------------------------------------------

    def stop(self) -> None:
        """Stop reading; the batch in hand is committed and acknowledged. Safe twice.

        A read in flight is let finish (within ``block_ms``): what Redis delivered
        to it is in hand too.
        """
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def wait_stopping(self) -> None:
        """Return once a stop has been asked for."""
        await self._stopping.wait()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        s = self.settings
        await self.store.lock_writer(self.identity)  # the file's lock, or PostgreSQL's
        lease = RedisLease(self.redis, self.stream, s.group, self.identity, s.lease_ttl_ms)
        try:
            await self._until_redis_answers(lease.acquire)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.store.unlock_writer()
            raise
        await self.run_leased(lease, task_status=task_status)

    async def run_leased(
        self, lease: RedisLease, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Consume with the store's writer lock and ``lease`` held; release both at the end."""
        s = self.settings
        try:
            await self._until_redis_answers(self._carry_over_attempts)
            await self.store.migrate()
            self.store.start_writer()
            await self._until_redis_answers(self._ensure_group)
            log.info(
                "worker %s started: stream=%s group=%s db=%s",
                s.consumer,
                self.stream,
                s.group,
                s.db_label,
            )
            self.ready.set()
            task_status.started()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._keep_lease, lease)
                tg.start_soon(self._trim_periodically)
                await self._consume()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await lease.release()
                except RedisError:
                    log.warning("could not release the writer lease; it expires by itself")
            with anyio.CancelScope(shield=True):
                await self.store.unlock_writer()
            if self.ready.is_set():  # a worker that never started has nothing to report
                log.info(
                    "worker %s stopped: %s",
                    s.consumer,
                    self.stats.summary(),
                    extra={"counters": self.stats.totals()},
                )

    async def _until_redis_answers(self, step: Any) -> None:
        backoff = self._backoff(0.1)
        while True:
            try:
                await step()
                return
            except (
                redis.exceptions.AuthenticationError,
                redis.exceptions.AuthorizationError,
            ) as exc:
                # Not an outage: retrying would hide a wrong password or ACL forever.
                raise RedisSetupError(
                    f"Redis refused this worker: {exc} (fix the user/password in redis_url, "
                    "or the ACL rules for that user)"
                ) from exc
            except _TRANSIENT_REDIS as exc:
                self.stats.note_error(_UNREACHABLE, exc)
                delay = backoff.next()
                log.warning("Redis unreachable (%s); retrying in %.1fs", exc, delay)
                await anyio.sleep(delay)

    def _backoff(self, first: float = 0.05) -> Backoff:
        return Backoff(first=first, factor=2.0, cap=self.settings.retry_max_s)

    async def _carry_over_attempts(self) -> None:
        """A single Redis used by an older worker may hold the attempts hash under its
        name before cluster support (``contracts.keys``): renamed, if nothing is at the
        new name yet. A cluster never had the old name (and cannot RENAME across slots)."""
        s = self.settings
        old = legacy_stream_key("attempts", self.stream, s.group)
        new = attempts_key(self.stream, s.group)
        if old == new or is_cluster(self.redis) or not await self.redis.exists(old):
            return
        if await self.redis.renamenx(old, new):
            log.info("attempts hash %s renamed %s (its name in the stream's hash slot)", old, new)

    async def _ensure_group(self) -> None:
        s = self.settings
        try:
            await self.redis.xgroup_create(self.stream, s.group, id="0", mkstream=True)
            log.info("created consumer group %s on %s", s.group, self.stream)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise RedisSetupError(
                    f"cannot create consumer group {s.group} on {self.stream}: {exc}"
                ) from exc

    # -- the loop ----------------------------------------------------------------

    async def _consume(self) -> None:
        # The next batch is read, decoded and projected while this one commits (in the
        # write process, or on the store's thread): a pipeline one batch deep.
        send, receive = anyio.create_memory_object_stream[_Batch](0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._read_and_decode, send)
            async with receive:
                async for batch in receive:
                    if not await self._commit(batch.good, batch.dead, batch.prepared):
                        tg.cancel_scope.cancel()
                        return  # stopped while the store was failing; nothing was acked
                    # Acknowledged while the next batch commits (XACK's round trip would
                    # leave the write process idle); the task group waits for it.
                    tg.start_soon(self._ack, batch.ids)
                    # Freed by the reader while the next batch commits, not here between
                    # two commits (a batch of models takes milliseconds to free).
                    self._spent.append(batch)

    async def _read_and_decode(self, send: MemoryObjectSendStream[_Batch]) -> None:
        async with send:
            s = self.settings
            async for entries, deliveries in self._read():
                self._in_flight.update(i for i, _ in entries)
                suspects = _suspects(entries, deliveries, s.max_deliveries)
                counted: list[str] = []
                if suspects:
                    # One whose attempt did not end before (a worker died decoding its
                    # batch) is decoded alone; the others together, each counted.
                    left = await self._attempts_left(list(suspects))
                    crashed = {i: e for i, e in suspects.items() if i in left}
                    entries = [e for e in entries if e[0] not in crashed]
                    async for alone in self._isolate(crashed, deliveries):
                        await send.send(alone)
                    counted = [i for i in suspects if i not in crashed]
                    await self._count_attempts(counted)
                batch: _Batch | None = None
                while entries:
                    batch, entries = await self._batch(entries, deliveries)
                    if counted:  # decoded and planned: the attempt ended
                        await self._forget_attempts(counted)
                        counted = []
                    await send.send(batch)
                batch = None  # so that it is freed with the spent batches, in one go
                self._spent.clear()

    async def _batch(
        self, entries: list[Entry], deliveries: dict[str, int]
    ) -> tuple[_Batch, list[Entry]]:
        """The batch of these entries, and those that go in the next one: a batch holds
        an event id once (see :func:`decode`).

        On PostgreSQL without a write process decoded :data:`DECODE_STEP` entries at a
        time, letting the batch before it commit in between: that commit is a series of
        round trips, each of which would otherwise wait for the whole batch to be decoded."""
        good: list[Decoded] = []
        dead: list[DeadLetter] = []
        repeats: list[Entry] = []
        seen: set[str] = set()
        limit = self.settings.max_message_bytes
        whole = isinstance(self.store, SqliteStore) or self.store.writer is not None
        step = (len(entries) or 1) if whole else DECODE_STEP
        for start in range(0, len(entries), step):
            if start:
                await anyio.lowlevel.checkpoint()
            g, d, r = decode(entries[start : start + step], deliveries, limit, seen)
            good += g
            dead += d
            repeats += r
        batch = self._prepare(good, dead)
        later = {i for i, _ in repeats}
        batch.ids = [i for i, _ in entries if i not in later]
        return batch, repeats

    async def _isolate(
        self, suspects: dict[str, Entry], deliveries: dict[str, int]
    ) -> AsyncIterator[_Batch]:
        """Suspect entries whose counted attempt did not end, each decoded on its own.

        Redelivery alone proves nothing (restarts, a locked database, a full disk all
        redeliver): an entry delivered more than ``max_deliveries`` times is decoded
        with its batch, its attempt counted in Redis around the decoding and planning.
        If the worker died there, the count is left behind, and next time each such
        entry is decoded alone, counted the same way, so that the one that kills the
        worker is found and its neighbours are not blamed. Only an entry whose attempts
        did not end more than ``max_deliveries`` times is dead-lettered for it.
        """
        s = self.settings
        for stream_id, entry in suspects.items():
            attempts = await self._attempt(stream_id, 1)
            if attempts > s.max_deliveries:
                raw = entry[1].get(_WIRE_KEY) or b""
                reason = f"stopped the worker {attempts - 1} times while being decoded"
                times = deliveries.get(stream_id, 1)
                dead = bounded(stream_id, raw, reason, times)
                batch = self._prepare([], [dead])
            else:
                batch = (await self._batch([entry], deliveries))[0]
            await self._attempt(stream_id, 0)
            batch.ids = [stream_id]
            yield batch

    async def _attempts_left(self, ids: list[str]) -> set[str]:
        """Of these entries, those with an attempt counted and never ended."""
        key = attempts_key(self.stream, self.settings.group)
        try:
            counts = await self.redis.hmget(key, ids)
        except (*_TRANSIENT_REDIS, ResponseError) as exc:
            log.warning("cannot read attempts in %s (%s); decoding each suspect alone", key, exc)
            return set(ids)
        return {i for i, n in zip(ids, counts, strict=True) if n is not None}

    async def _count_attempts(self, ids: list[str]) -> None:
        await self._pipelined_attempts(ids, add=True)

    async def _forget_attempts(self, ids: list[str]) -> None:
        await self._pipelined_attempts(ids, add=False)

    async def _pipelined_attempts(self, ids: list[str], add: bool) -> None:
        if not ids:
            return
        key = attempts_key(self.stream, self.settings.group)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for i in ids:
                    pipe.hincrby(key, i, 1) if add else pipe.hdel(key, i)
                await pipe.execute()
        except (*_TRANSIENT_REDIS, ResponseError) as exc:
            # Uncounted: a crash now would go unattributed once; never a wrong dead letter.
            log.warning("cannot count attempts in %s (%s)", key, exc)

    async def _attempt(self, stream_id: str, add: int) -> int:
        """Count an attempt at a suspect entry (``add`` 1), or forget its count (0)."""
        key = attempts_key(self.stream, self.settings.group)
        while True:
            try:
                if add:
                    return int(await self.redis.hincrby(key, stream_id, add))
                await self.redis.hdel(key, stream_id)
                return 0
            except _TRANSIENT_REDIS as exc:
                self.stats.note_error(_UNREACHABLE, exc)
                await anyio.sleep(self.settings.retry_max_s)
            except ResponseError as exc:  # an ACL without the attempts key: do not count
                log.warning("cannot count attempts at %s in %s (%s); decoding it uncounted "
                            "(grant the worker's Redis user ~tradescribe:attempts:*)",
                            stream_id, key, exc)  # fmt: skip
                return 0

    async def _read(self) -> AsyncIterator[tuple[list[Entry], dict[str, int]]]:
        """Own pending entries first, then idle ones of dead consumers, then new ones."""
        if self.takes_over:
            await self._claim_left_behind()
        async for batch in self._read_pending():
            yield batch
        next_claim = 0.0
        while not self.stopping:
            if time.monotonic() >= next_claim:
                async for batch in self._read_claimable():
                    yield batch
                next_claim = time.monotonic() + self.settings.claim_interval_s
            entries = await self._xreadgroup(">", block=self.settings.block_ms)
            if entries:
                yield entries, {}

    async def _read_pending(self) -> AsyncIterator[tuple[list[Entry], dict[str, int]]]:
        after = "0"
        while not self.stopping:
            entries = await self._xreadgroup(after, block=None)
            if not entries:
                return
            after = entries[-1][0]
            yield entries, await self._deliveries(entries)

    async def _claim_left_behind(self) -> None:
        """Make every entry pending in the group ours (XAUTOCLAIM, idle or not),
        to be read with our own pending ones before anything new: called only when this
        process holds the partition's lease and its store lock, so whoever read them
        can no longer commit them."""
        s = self.settings
        cursor = "0-0"
        claimed = 0
        while not self.stopping:
            try:
                reply = await self.redis.xautoclaim(
                    self.stream, s.group, s.consumer, 0, cursor, count=s.batch_max
                )  # not JUSTID: redis-py then drops the cursor from the reply
            except _TRANSIENT_REDIS as exc:
                self.stats.note_error(_UNREACHABLE, exc)
                await anyio.sleep(self._backoff().next())
                continue
            cursor = _text(reply[0])
            claimed += len(reply[1])
            if cursor == "0-0":
                break
        if claimed:
            log.info("took over %d pending entries of %s", claimed, self.stream)

    async def _read_claimable(self) -> AsyncIterator[tuple[list[Entry], dict[str, int]]]:
        s = self.settings
        cursor = "0-0"
        while not self.stopping:
            # Taken before the claim is sent: an acknowledgement that ends while the
            # claim is on its way clears the entry from _in_flight, but Redis may have
            # claimed it (still pending) before that XACK, and it must not come back.
            held = set(self._in_flight)
            try:
                reply = await self.redis.xautoclaim(
                    self.stream, s.group, s.consumer, s.claim_idle_ms, cursor, count=s.batch_max
                )
            except _TRANSIENT_REDIS as exc:
                self.stats.note_error(_UNREACHABLE, exc)
                return
            cursor = _text(reply[0])
            entries = [(_text(i), f or {}) for i, f in reply[1]]
            # Our own batch in hand is idle only because its commit is slow; it is
            # acknowledged when that commit ends. Claim only what nobody is holding.
            entries = [e for e in entries if e[0] not in held]
            if entries:
                log.info("claimed %d idle entries from other consumers", len(entries))
                yield entries, await self._deliveries(entries)
            if cursor == "0-0":
                return

    async def _xreadgroup(self, after: str, block: int | None) -> list[Entry]:
        """One XREADGROUP, retried on transient errors; [] when stopping."""
        s = self.settings
        backoff = self._backoff()
        while not self.stopping:
            try:
                reply = await self.redis.xreadgroup(
                    s.group, s.consumer, {self.stream: after}, count=s.batch_max, block=block
                )
                self.stats.recovered(_UNREACHABLE)
                return _entries(reply)
            except _TRANSIENT_REDIS as exc:
                self.stats.note_error(_UNREACHABLE, exc)
                delay = backoff.next()
                log.warning("reading from Redis failed (%s); retrying in %.2fs", exc, delay)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("consumer group vanished (%s); creating it again", exc)
                await self._ensure_group()
                continue
            await anyio.sleep(delay)
        return []

    async def _deliveries(self, entries: list[Entry]) -> dict[str, int]:
        """How many times each (re-read or claimed) entry has been delivered."""
        s = self.settings
        try:
            pending = await self.redis.xpending_range(
                self.stream, s.group, entries[0][0], entries[-1][0], len(entries), s.consumer
            )
        except _TRANSIENT_REDIS:
            return {}
        return {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}

    def _prepare(self, good: list[Decoded], dead: list[DeadLetter]) -> _Batch:
        """The batch planned for the store. An event whose projection raises is found by
        planning the events one by one and becomes a dead letter; the rest are kept."""
        try:
            return _Batch([], good, dead, self.store.prepare(good, dead))
        except Exception:  # found below, event by event
            log.exception("planning a batch failed; planning its events one by one")
        kept: list[Decoded] = []
        for d in good:
            try:
                self.store.prepare([d], [])
                kept.append(d)
            except Exception as exc:  # this event is the dead letter
                dead = [*dead, unstorable(d, exc)]
        return _Batch([], kept, dead, self.store.prepare(kept, dead))

    async def _commit(
        self,
        good: Sequence[Decoded],
        dead: Sequence[DeadLetter],
        prepared: Prepared | None = None,
    ) -> bool:
        """Commit; False if stopped before it succeeded.

        A failure of the store itself (disk, lock, I/O) holds the batch back and is
        retried until it passes; it counts against no entry. Any other error is an
        entry's: the events are committed one by one, and one that still fails is
        dead-lettered with the error, so its neighbours are stored.
        """
        if not good and not dead:
            return True
        backoff = self._backoff()
        while True:
            try:
                with anyio.CancelScope(shield=True):
                    started = time.perf_counter()
                    if prepared is None:
                        prepared = self.store.prepare(good, dead)
                    new, conflicts = await self.store.commit_planned(prepared)
                self._record(good, dead, new, conflicts, time.perf_counter() - started)
                return True
            except Exception as exc:
                prepared = None
                if not store_error(exc):
                    if len(good) > 1:
                        log.exception("commit failed; committing the batch event by event")
                        for one in good:
                            if not await self._commit([one], []):
                                return False
                        return await self._commit([], dead)
                    if good:
                        log.exception("event %s cannot be stored; dead-lettering it",
                                      good[0].event.id)  # fmt: skip
                        dead, good = [*dead, *(unstorable(d, exc) for d in good)], []
                        continue
                    if any(d.raw for d in dead):  # the dead letters' bytes: keep their reasons
                        log.exception("dead letters cannot be stored; keeping them without bytes")
                        dead = [without_bytes(d, exc) for d in dead]
                        continue
                self.stats.note_error("database", exc)
                delay = backoff.next()
                log.warning("commit failed (%s); nothing acknowledged, retry in %.2fs", exc, delay)
            if self.stopping:
                return False
            await anyio.sleep(delay)

    def _record(
        self,
        good: Sequence[Decoded],
        dead: Sequence[DeadLetter],
        new: int,
        conflicts: int,
        seconds: float,
    ) -> None:
        st = self.stats
        st.committed += new
        st.duplicates += len(good) - new - conflicts
        st.dead_letters += len(dead) + conflicts
        st.batches += 1
        st.by_type.update(d.event.type for d in good)
        st.last_commit_at = time.time()
        st.commit_ms.append(seconds * 1000)
        st.batch_sizes.append(len(good) + len(dead))
        st.commits.append((time.monotonic(), new))
        st.last_error = None
        log.debug(
            "committed %d events (%d new, %d dead) in %.1f ms",
            len(good),
            new,
            len(dead),
            seconds * 1000,
        )

    async def _ack(self, ids: list[str]) -> None:
        s = self.settings
        backoff = self._backoff()
        while ids:
            try:
                with anyio.CancelScope(shield=True):
                    await self.redis.xack(self.stream, s.group, *ids)
                last = self.stats.last_stream_id  # acks may end out of order
                if last is None or stream_order(ids[-1]) > stream_order(last):
                    self.stats.last_stream_id = ids[-1]
                self._in_flight.difference_update(ids)
                return
            except _TRANSIENT_REDIS as exc:
                # Committed but not acknowledged: redelivery is harmless, so just retry.
                self.stats.note_error(_UNREACHABLE, exc)
                if self.stopping:
                    return
                await anyio.sleep(backoff.next())

    # -- housekeeping ------------------------------------------------------------

    async def _keep_lease(self, lease: RedisLease) -> None:
        while True:
            await anyio.sleep(lease.ttl_ms / 3000)
            try:
                await lease.renew()
                self.stats.recovered(_UNREACHABLE)
            except _TRANSIENT_REDIS as exc:
                self.stats.note_error(_UNREACHABLE, exc)

    async def _trim_periodically(self) -> None:
        s = self.settings
        if s.trim_keep_s <= 0:
            return
        while True:
            await anyio.sleep(s.trim_interval_s)
            try:
                await self.trim()
            except RedisError as exc:
                log.warning("trimming the stream failed: %s", exc)

    async def trim(self) -> int:
        """Drop entries that are committed and older than ``trim_keep_s``."""
        s = self.settings
        groups = await self.redis.xinfo_groups(self.stream)
        ours = next((g for g in groups if _text(g["name"]) == s.group), None)
        if ours is None:
            return 0
        bound = _text(ours["last-delivered-id"])
        summary = await self.redis.xpending(self.stream, s.group)
        if summary["pending"]:
            bound = min(bound, _text(summary["min"]), key=stream_order)
        keep_from = f"{int((time.time() - s.trim_keep_s) * 1000)}-0"
        min_id = min(bound, keep_from, key=stream_order)
        return int(await self.redis.xtrim(self.stream, minid=min_id, approximate=False))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entries(reply: Any) -> list[Entry]:
    """XREADGROUP's reply as (stream id, fields); deleted entries have no fields."""
    return [(_text(i), f or {}) for _, entries in reply or [] for i, f in entries]


def attempts_key(stream: str, group: str) -> str:
    """The hash of attempts at suspect entries (see ``Worker._isolate``), in the
    stream's hash slot (``contracts.keys``)."""
    return stream_key("attempts", stream, group)


def _suspects(entries: list[Entry], deliveries: dict[str, int], limit: int) -> dict[str, Entry]:
    """Re-read entries delivered more than ``limit`` times."""
    if not deliveries:
        return {}
    return {e[0]: e for e in entries if e[1] and deliveries.get(e[0], 1) > limit}
