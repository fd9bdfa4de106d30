"""Publishers: one call per event, returning its id.

``Publisher`` is for ordinary (synchronous) bots, ``AsyncPublisher`` for asyncio
ones. Both validate the event before it leaves the process, so a bot learns of a
bad field at the call that made it, not later from a dead-letter table.

They never trim the stream (MAXLEN could delete trades nobody has stored yet).

When Redis cannot be reached, an event goes to a local spool (``contracts.spool``)
and the call still returns its id within milliseconds; a background drain sends
spooled events, oldest first, as soon as Redis answers. While anything waits in
the spool, new events queue behind it, so each publisher's order holds.

Both classes are thin I/O shells around one ``PublisherCore``
(``contracts.publisher_core``), which holds the options and the spool and decides
what to send, when to spool, when a drain starts and ends, and what to raise.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
import weakref
from types import TracebackType
from typing import Any, Self, Unpack, overload

import redis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from contracts.events import WIRE_FIELD, AnyEvent, Payload
from contracts.publisher_core import PublisherCore, PublisherKeywords, PublisherOptions
from contracts.redisclient import REDIS_ERRORS, AsyncRedis, SyncRedis, async_client, sync_client
from contracts.redisurl import is_cluster_url
from contracts.spool import SpoolStatus

__all__ = ["DEFAULT_REDIS_URL", "AsyncPublisher", "Publisher", "PublisherOptions"]

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
log = logging.getLogger(__name__)


def _client_options(timeout_s: float) -> dict[str, Any]:
    return {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "decode_responses": True,
    }


def _envelope(
    id: str | None, ts: Any, account: str | None, plugin_id: str | None, mode: str | None
) -> dict[str, Any]:
    return {"id": id, "ts": ts, "account": account, "plugin_id": plugin_id, "mode": mode}


class Publisher:
    """Synchronous publisher.

    >>> pub = Publisher("redis://localhost:6379/0", source="my-bot", mode="paper")
    >>> pub.publish("trade.opened", trade_id="T1", symbol="BTCUSDT", side="buy",
    ...             quantity="0.5", entry_price="43000.5")   # doctest: +SKIP
    '019...'

    Options are keywords (``source=``, ``mode=``, ``spool_dir=`` ...) or one
    ``options=PublisherOptions(...)``; ``client=`` passes a built ``redis.Redis`` (or
    ``redis.RedisCluster``). A ``redis+cluster://`` URL publishes to a Redis Cluster.
    """

    @overload
    def __init__(
        self,
        redis_url: str = ...,
        *,
        options: PublisherOptions,
        client: SyncRedis | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        redis_url: str = ...,
        *,
        client: SyncRedis | None = None,
        **keywords: Unpack[PublisherKeywords],
    ) -> None: ...

    def __init__(
        self,
        redis_url: str = DEFAULT_REDIS_URL,
        *,
        options: PublisherOptions | None = None,
        client: SyncRedis | None = None,
        **keywords: Any,
    ) -> None:
        opts = PublisherOptions.resolve(options, keywords, "Publisher")
        self._url = redis_url
        self._timeout_s = opts.timeout_s
        # A cluster client reads the cluster's layout when it is built: built at the
        # first send instead, so that a publisher starts (and spools) while it is away.
        self._built = threading.Lock()
        self._client = client
        if client is None and not is_cluster_url(redis_url):
            self._client = self._build()
        self._core = PublisherCore(redis_url, opts)
        # One connection held for the publisher's life: a pooled ``xadd`` spends more
        # CPU in the client (pool, retry, instrumentation) than Redis spends on it.
        self._conn: redis.Connection | None = None
        self._conn_lock = threading.Lock()
        self._wake = threading.Event()  # set by close(): a drain waiting to retry stops
        self._drainer: threading.Thread | None = None
        self._at_exit: Any = None
        if opts.linger_s:
            # A script that exits without close() still sends what lingers (its spool
            # would otherwise wait for the next start of the same bot).
            self._at_exit = _close_at_exit(weakref.ref(self))
            atexit.register(self._at_exit)
        self._kick()  # a previous run left events behind: send them first

    def publish(
        self,
        event_type: str,
        data: dict[str, Any] | Payload | None = None,
        /,
        *,
        id: str | None = None,
        ts: Any = None,
        account: str | None = None,
        plugin_id: str | None = None,
        mode: str | None = None,
        **fields: Any,
    ) -> str:
        """Validate and send one event; returns its id.

        ``data`` may be a dict or a payload model; keyword fields are merged into it.
        Raises ``pydantic.ValidationError`` for a bad event and ``PublishError``
        when Redis cannot take it.
        """
        envelope = _envelope(id, ts, account, plugin_id, mode)
        return self.send(self._core.build(event_type, data, fields, envelope))

    def send(self, event: AnyEvent) -> str:
        """Send an event that is already built and validated."""
        core = self._core
        wire = core.wire(event)
        if core.route(wire):
            try:
                self._xadd(core.stream_of(event), wire)
                return event.id
            except REDIS_ERRORS as exc:
                core.send_failed(exc, wire)
        self._kick()
        return event.id

    def _build(self) -> SyncRedis:
        return sync_client(
            self._url, retry=Retry(NoBackoff(), 1), **_client_options(self._timeout_s)
        )

    def _redis(self) -> SyncRedis:
        """The client; built now if it was not (raises while a cluster is away)."""
        with self._built:
            if self._client is None:
                self._client = self._build()
            return self._client

    def _xadd(self, stream: str, wire: str) -> None:
        """XADD on the held connection, retried once on a fresh one (as the client's
        ``Retry(NoBackoff(), 1)`` did); a retried entry may be stored twice in the
        stream, and the worker keeps one. On a cluster, the client's own XADD, which
        finds the shard holding the stream."""
        client = self._client if self._client is not None else self._redis()
        if isinstance(client, redis.RedisCluster):
            client.xadd(stream, {WIRE_FIELD: wire})
            return
        with self._conn_lock:
            for attempt in (1, 2):
                conn = self._conn
                if conn is None:
                    conn = self._conn = client.connection_pool.get_connection()
                try:
                    conn.send_command(  # type: ignore[no-untyped-call]
                        "XADD", stream, "*", WIRE_FIELD, wire
                    )
                    conn.read_response()
                    return
                except (redis.ConnectionError, redis.TimeoutError):
                    conn.disconnect()  # type: ignore[no-untyped-call]
                    if attempt == 2:
                        raise

    def spool_status(self) -> SpoolStatus | None:
        """Events waiting in the local spool, their bytes and the oldest one's age."""
        return self._core.status()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until the spool is empty (True) or ``timeout_s`` passed (False)."""
        deadline = time.monotonic() + timeout_s
        while self._core.pending:
            if time.monotonic() > deadline:
                return False
            self._kick()
            time.sleep(0.01)
        return True

    def _kick(self) -> None:
        """Start the drain thread if the core says one is due."""
        if not self._core.claim_drain():
            return
        try:
            self._drainer = threading.Thread(
                target=self._drain, name="tradescribe-spool-drain", daemon=True
            )
            self._drainer.start()
        except BaseException:
            self._core.drain_abandoned()
            raise

    def _drain(self) -> None:
        """Send spooled events oldest first; back off while Redis is away. Lingering,
        wait ``linger_s`` before each chunk so that one pipeline carries what gathered."""
        core = self._core
        try:
            while True:
                if core.linger_s:
                    self._wake.wait(core.linger_s)  # set by close(): no more waiting
                if (chunk := core.next_chunk()) is None:
                    break
                try:
                    self._xadd_lines(chunk.lines)
                except REDIS_ERRORS as exc:
                    self._wake.wait(core.chunk_failed(exc))
                    continue
                core.chunk_sent(chunk)
        except Exception as exc:
            log.exception("%s", core.drain_crashed(exc))

    def _xadd_lines(self, lines: list[str]) -> None:
        """One pipeline of XADDs on the held connection (dropped on any failure: the
        whole chunk is sent again, and the worker keeps one copy of each event)."""
        core = self._core
        client = self._redis()
        if isinstance(client, redis.RedisCluster):
            pipe = client.pipeline(transaction=False)  # type: ignore[no-untyped-call]
            for line in lines:
                pipe.xadd(core.stream_of_line(line), {WIRE_FIELD: line})
            pipe.execute()
            return
        with self._conn_lock:
            conn = self._conn
            if conn is None:
                conn = self._conn = client.connection_pool.get_connection()
            commands = [("XADD", core.stream_of_line(x), "*", WIRE_FIELD, x) for x in lines]
            try:
                packed = conn.pack_commands(commands)  # type: ignore[no-untyped-call]
                conn.send_packed_command(packed)  # type: ignore[no-untyped-call]
                for _ in lines:
                    conn.read_response()
            except BaseException:
                conn.disconnect()  # type: ignore[no-untyped-call]
                raise

    def close(self) -> None:
        """Stop draining (what waits stays on disk for the next start) and disconnect.
        Lingering, first send what waits, for up to ``4 * timeout_s`` (not while Redis
        is known to be away)."""
        core = self._core
        if self._at_exit is not None:
            atexit.unregister(self._at_exit)
            self._at_exit = None
        if core.linger_s and core.spool is not None and core.spool.last_error is None:
            self.flush(timeout_s=4 * self._timeout_s)
        core.stop_draining()
        self._wake.set()
        drainer = self._drainer
        if drainer is not None:
            drainer.join(timeout=2)
        self._core.close()
        client = self._client
        with self._conn_lock:
            if self._conn is not None and isinstance(client, redis.Redis):
                client.connection_pool.release(self._conn)
            self._conn = None
        if client is not None:
            client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _close_at_exit(ref: weakref.ref[Publisher]) -> Any:
    def close() -> None:
        publisher = ref()
        if publisher is not None:
            publisher.close()

    return close


class AsyncPublisher:
    """The asyncio twin of :class:`Publisher`, with the same arguments
    (``client=`` takes a ``redis.asyncio.Redis`` or ``redis.asyncio.RedisCluster``)."""

    @overload
    def __init__(
        self,
        redis_url: str = ...,
        *,
        options: PublisherOptions,
        client: AsyncRedis | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        redis_url: str = ...,
        *,
        client: AsyncRedis | None = None,
        **keywords: Unpack[PublisherKeywords],
    ) -> None: ...

    def __init__(
        self,
        redis_url: str = DEFAULT_REDIS_URL,
        *,
        options: PublisherOptions | None = None,
        client: AsyncRedis | None = None,
        **keywords: Any,
    ) -> None:
        opts = PublisherOptions.resolve(options, keywords, "AsyncPublisher")
        if opts.linger_s:
            raise TypeError(
                "AsyncPublisher() takes no linger_s: its publish already lets the loop run "
                "while Redis answers (linger_s is for Publisher)"
            )
        self._client = client or async_client(
            redis_url,
            retry=AsyncRetry(NoBackoff(), 1),
            **_client_options(opts.timeout_s),
        )
        self._core = PublisherCore(redis_url, opts)
        self._drainer: asyncio.Task[None] | None = None  # held: the loop keeps only weak refs

    async def publish(
        self,
        event_type: str,
        data: dict[str, Any] | Payload | None = None,
        /,
        *,
        id: str | None = None,
        ts: Any = None,
        account: str | None = None,
        plugin_id: str | None = None,
        mode: str | None = None,
        **fields: Any,
    ) -> str:
        """Validate and send one event; returns its id (see ``Publisher.publish``)."""
        envelope = _envelope(id, ts, account, plugin_id, mode)
        return await self.send(self._core.build(event_type, data, fields, envelope))

    async def send(self, event: AnyEvent) -> str:
        """Send an event that is already built and validated."""
        core = self._core
        wire = core.wire(event)
        if core.route(wire):
            try:
                await self._client.xadd(core.stream_of(event), {WIRE_FIELD: wire})
                return event.id
            except REDIS_ERRORS as exc:
                core.send_failed(exc, wire)
        self._kick()
        return event.id

    def spool_status(self) -> SpoolStatus | None:
        """Events waiting in the local spool, their bytes and the oldest one's age."""
        return self._core.status()

    async def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until the spool is empty (True) or ``timeout_s`` passed (False)."""
        deadline = time.monotonic() + timeout_s
        while self._core.pending:
            if time.monotonic() > deadline:
                return False
            self._kick()
            await asyncio.sleep(0.01)
        return True

    def _kick(self) -> None:
        """Start the drain task if the core says one is due (needs a running loop)."""
        if not self._core.claim_drain():
            return
        try:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        except BaseException:
            self._core.drain_abandoned()
            raise

    async def _drain(self) -> None:
        """Send spooled events oldest first; back off while Redis is away."""
        core = self._core
        try:
            while (chunk := core.next_chunk()) is not None:
                try:
                    pipe = self._client.pipeline(transaction=False)
                    for line in chunk.lines:
                        pipe.xadd(core.stream_of_line(line), {WIRE_FIELD: line})
                    await pipe.execute()
                except REDIS_ERRORS as exc:
                    await asyncio.sleep(core.chunk_failed(exc))
                    continue
                core.chunk_sent(chunk)
        except Exception as exc:
            log.exception("%s", core.drain_crashed(exc))
        except BaseException:  # cancelled by aclose(): the events stay spooled
            core.drain_abandoned()
            raise

    async def aclose(self) -> None:
        """Stop draining (what waits stays on disk for the next start) and disconnect.

        Cancelling the task that awaits this still cleans up, then re-raises."""
        self._core.stop_draining()
        drainer, self._drainer = self._drainer, None
        try:
            if drainer is not None and not drainer.done():
                drainer.cancel()
                # wait(), not ``await drainer``: the drain's CancelledError is its own and
                # is not raised here, while one meant for our caller still is.
                await asyncio.wait([drainer])
        finally:
            self._core.close()
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        self._kick()  # a previous run left events behind: send them first
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
