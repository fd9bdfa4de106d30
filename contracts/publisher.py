"""Publishers: one call per event, returning its id.

``Publisher`` is for ordinary (synchronous) bots, ``AsyncPublisher`` for asyncio
ones. Both validate the event before it leaves the process, so a bot learns of a
bad field at the call that made it, not later from a dead-letter table.

They never trim the stream (MAXLEN could delete trades nobody has stored yet).

When Redis cannot be reached, an event goes to a local spool (``contracts.spool``)
and the call still returns its id within milliseconds; a background drain sends
spooled events, oldest first, as soon as Redis answers. While anything waits in
the spool, new events queue behind it, so each publisher's order holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, AuthorizationError
from redis.retry import Retry

from contracts.errors import PublishError
from contracts.events import (
    DEFAULT_STREAM,
    MAX_EVENT_BYTES,
    WIRE_FIELD,
    AnyEvent,
    Payload,
    build_event,
    to_wire,
)
from contracts.redisurl import mask_url
from contracts.spool import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_EVENTS,
    Spool,
    SpoolStatus,
    default_spool_dir,
)

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
log = logging.getLogger(__name__)
_DRAIN_MAX_DELAY_S = 2.0


def _transient(exc: Exception) -> bool:
    """Redis is away (spool and retry), as opposed to refusing us (tell the bot)."""
    if isinstance(exc, AuthenticationError | AuthorizationError):
        return False
    return isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError)


def _make_spool(
    enabled: bool, directory: str | Path | None, source: str, max_bytes: int, max_events: int
) -> Spool | None:
    if not enabled:
        return None
    where = Path(directory) if directory is not None else default_spool_dir()
    return Spool(where, source, max_bytes=max_bytes, max_events=max_events)


class _Envelope:
    """What both publishers share: the bot's identity and how events are built."""

    def __init__(
        self,
        redis_url: str,
        source: str,
        account: str | None,
        plugin_id: str | None,
        mode: str | None,
        stream: str,
    ) -> None:
        self.redis_url = redis_url
        self.stream = stream
        # Tenancy left as None is not sent: the contract's defaults apply without
        # overriding what an earlier event of the same trade said.
        tenancy = {"account": account, "plugin_id": plugin_id, "mode": mode}
        self.defaults: dict[str, Any] = {
            "source": source,
            **{k: v for k, v in tenancy.items() if v is not None},
        }

    def build(
        self,
        event_type: str,
        data: dict[str, Any] | Payload | None,
        fields: dict[str, Any],
        envelope: dict[str, Any],
    ) -> AnyEvent:
        payload: dict[str, Any] | Payload
        if data is None:
            payload = fields
        elif isinstance(data, Payload):
            payload = {**data.model_dump(exclude_unset=True), **fields}
        else:
            payload = {**data, **fields}
        given = {k: v for k, v in envelope.items() if v is not None}
        return build_event(event_type, payload, **{**self.defaults, **given})

    def failure(self, exc: Exception) -> PublishError:
        where = mask_url(self.redis_url)
        if isinstance(exc, redis.ResponseError) and "OOM" in str(exc):
            hint = "Redis is out of memory; raise maxmemory (tradescribe needs noeviction)"
        else:
            hint = "check that redis-server is running and the URL is right"
        return PublishError(f"cannot publish to Redis at {where}: {exc} ({hint})")


def _client_options(timeout_s: float) -> dict[str, Any]:
    return {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "decode_responses": True,
    }


def _wire(event: AnyEvent) -> str:
    """The event's wire JSON; refused at the call when the worker would refuse it."""
    wire = to_wire(event)
    if len(wire) > MAX_EVENT_BYTES // 4 and len(wire.encode()) > MAX_EVENT_BYTES:
        raise PublishError(
            f"event {event.id} is {len(wire.encode())} bytes of JSON, more than the "
            f"{MAX_EVENT_BYTES} a stream entry may hold; it was NOT recorded (send less "
            "in attributes or notes)"
        )
    return wire


class Publisher:
    """Synchronous publisher.

    >>> pub = Publisher("redis://localhost:6379/0", source="my-bot", mode="paper")
    >>> pub.publish("trade.opened", trade_id="T1", symbol="BTCUSDT", side="buy",
    ...             quantity="0.5", entry_price="43000.5")   # doctest: +SKIP
    '019...'
    """

    def __init__(
        self,
        redis_url: str = DEFAULT_REDIS_URL,
        *,
        source: str,
        account: str | None = None,
        plugin_id: str | None = None,
        mode: str | None = None,
        stream: str = DEFAULT_STREAM,
        timeout_s: float = 0.5,
        client: redis.Redis | None = None,
        spool: bool = True,
        spool_dir: str | Path | None = None,
        spool_max_bytes: int = DEFAULT_MAX_BYTES,
        spool_max_events: int = DEFAULT_MAX_EVENTS,
    ) -> None:
        self._env = _Envelope(redis_url, source, account, plugin_id, mode, stream)
        self._client = client or redis.Redis.from_url(
            redis_url,
            retry=Retry(NoBackoff(), 1),
            **_client_options(timeout_s),
        )
        # One connection held for the publisher's life: a pooled ``xadd`` spends more
        # CPU in the client (pool, retry, instrumentation) than Redis spends on it.
        self._conn: redis.Connection | None = None
        self._conn_lock = threading.Lock()
        self._spool = _make_spool(spool, spool_dir, source, spool_max_bytes, spool_max_events)
        self._closed = threading.Event()
        self._drain_lock = threading.Lock()
        self._drainer: threading.Thread | None = None
        if self._spool is not None and self._spool.pending:
            self._start_drain()  # a previous run left events behind: send them first

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
        envelope = {"id": id, "ts": ts, "account": account, "plugin_id": plugin_id, "mode": mode}
        return self.send(self._env.build(event_type, data, fields, envelope))

    def send(self, event: AnyEvent) -> str:
        """Send an event that is already built and validated."""
        wire = _wire(event)
        spool = self._spool
        if spool is not None and spool.pending:
            self._to_spool(spool, wire)  # behind what already waits, to keep the order
            return event.id
        try:
            self._xadd(wire)
        except (redis.RedisError, OSError) as exc:
            if spool is None or not _transient(exc):
                raise self._env.failure(exc) from exc
            spool.last_error = str(exc)
            self._to_spool(spool, wire)
        return event.id

    def _xadd(self, wire: str) -> None:
        """XADD on the held connection, retried once on a fresh one (as the client's
        ``Retry(NoBackoff(), 1)`` did); a retried entry may be stored twice in the
        stream, and the worker keeps one."""
        with self._conn_lock:
            for attempt in (1, 2):
                conn = self._conn
                if conn is None:
                    conn = self._conn = self._client.connection_pool.get_connection()
                try:
                    conn.send_command(  # type: ignore[no-untyped-call]
                        "XADD", self._env.stream, "*", WIRE_FIELD, wire
                    )
                    conn.read_response()
                    return
                except (redis.ConnectionError, redis.TimeoutError):
                    conn.disconnect()  # type: ignore[no-untyped-call]
                    if attempt == 2:
                        raise

    def spool_status(self) -> SpoolStatus | None:
        """Events waiting in the local spool, their bytes and the oldest one's age."""
        return self._spool.status() if self._spool is not None else None

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until the spool is empty (True) or ``timeout_s`` passed (False)."""
        deadline = time.monotonic() + timeout_s
        while self._spool is not None and self._spool.pending:
            if time.monotonic() > deadline:
                return False
            self._start_drain()
            time.sleep(0.01)
        return True

    def _to_spool(self, spool: Spool, wire: str) -> None:
        spool.append(wire)
        self._start_drain()

    def _start_drain(self) -> None:
        with self._drain_lock:
            if self._drainer is None and not self._closed.is_set():
                self._drainer = threading.Thread(
                    target=self._drain, name="tradescribe-spool-drain", daemon=True
                )
                self._drainer.start()

    def _drain(self) -> None:
        """Send spooled events oldest first; back off while Redis is away."""
        spool = self._spool
        assert spool is not None
        delay = 0.05
        while not self._closed.is_set():
            chunk = spool.chunk()
            if chunk is None:
                with self._drain_lock:
                    if spool.chunk() is None:
                        self._drainer = None
                        return
                continue
            f, end, lines = chunk
            try:
                pipe = self._client.pipeline(transaction=False)
                for line in lines:
                    pipe.xadd(self._env.stream, {WIRE_FIELD: line})
                pipe.execute()
            except (redis.RedisError, OSError) as exc:
                spool.last_error = str(exc)
                self._closed.wait(delay)
                delay = min(delay * 2, _DRAIN_MAX_DELAY_S)
                continue
            spool.advance(f, end, len(lines))
            delay = 0.05
        with self._drain_lock:
            self._drainer = None

    def close(self) -> None:
        """Stop draining (what waits stays on disk for the next start) and disconnect."""
        self._closed.set()
        drainer = self._drainer
        if drainer is not None:
            drainer.join(timeout=2)
        if self._spool is not None:
            self._spool.close()
        with self._conn_lock:
            if self._conn is not None:
                self._client.connection_pool.release(self._conn)
                self._conn = None
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncPublisher:
    """The asyncio twin of :class:`Publisher`, with the same arguments."""

    def __init__(
        self,
        redis_url: str = DEFAULT_REDIS_URL,
        *,
        source: str,
        account: str | None = None,
        plugin_id: str | None = None,
        mode: str | None = None,
        stream: str = DEFAULT_STREAM,
        timeout_s: float = 0.5,
        client: aredis.Redis | None = None,
        spool: bool = True,
        spool_dir: str | Path | None = None,
        spool_max_bytes: int = DEFAULT_MAX_BYTES,
        spool_max_events: int = DEFAULT_MAX_EVENTS,
    ) -> None:
        self._env = _Envelope(redis_url, source, account, plugin_id, mode, stream)
        self._client = client or aredis.Redis.from_url(
            redis_url,
            retry=AsyncRetry(NoBackoff(), 1),
            **_client_options(timeout_s),
        )
        self._spool = _make_spool(spool, spool_dir, source, spool_max_bytes, spool_max_events)
        self._drainer: asyncio.Task[None] | None = None
        self._closed = False

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
        envelope = {"id": id, "ts": ts, "account": account, "plugin_id": plugin_id, "mode": mode}
        return await self.send(self._env.build(event_type, data, fields, envelope))

    async def send(self, event: AnyEvent) -> str:
        wire = _wire(event)
        spool = self._spool
        if spool is not None and spool.pending:
            self._to_spool(spool, wire)
            return event.id
        try:
            await self._client.xadd(self._env.stream, {WIRE_FIELD: wire})
        except (redis.RedisError, OSError) as exc:
            if spool is None or not _transient(exc):
                raise self._env.failure(exc) from exc
            spool.last_error = str(exc)
            self._to_spool(spool, wire)
        return event.id

    def spool_status(self) -> SpoolStatus | None:
        """Events waiting in the local spool, their bytes and the oldest one's age."""
        return self._spool.status() if self._spool is not None else None

    async def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until the spool is empty (True) or ``timeout_s`` passed (False)."""
        deadline = time.monotonic() + timeout_s
        while self._spool is not None and self._spool.pending:
            if time.monotonic() > deadline:
                return False
            self._start_drain()
            await asyncio.sleep(0.01)
        return True

    def _to_spool(self, spool: Spool, wire: str) -> None:
        spool.append(wire)
        self._start_drain()

    def _start_drain(self) -> None:
        if self._closed or (self._drainer is not None and not self._drainer.done()):
            return
        self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        spool = self._spool
        assert spool is not None
        delay = 0.05
        while (chunk := spool.chunk()) is not None:
            f, end, lines = chunk
            try:
                pipe = self._client.pipeline(transaction=False)
                for line in lines:
                    pipe.xadd(self._env.stream, {WIRE_FIELD: line})
                await pipe.execute()
            except (redis.RedisError, OSError) as exc:
                spool.last_error = str(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _DRAIN_MAX_DELAY_S)
                continue
            spool.advance(f, end, len(lines))
            delay = 0.05

    async def aclose(self) -> None:
        """Stop draining (what waits stays on disk for the next start) and disconnect."""
        self._closed = True
        if self._drainer is not None and not self._drainer.done():
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
        if self._spool is not None:
            self._spool.close()
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        if self._spool is not None and self._spool.pending:
            self._start_drain()  # a previous run left events behind: send them first
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
