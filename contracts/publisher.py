"""Publishers: one call per event, returning its id.

``Publisher`` is for ordinary (synchronous) bots, ``AsyncPublisher`` for asyncio
ones. Both validate the event before it leaves the process, so a bot learns of a
bad field at the call that made it, not later from a dead-letter table.

They never trim the stream (MAXLEN could delete trades nobody has stored yet).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from contracts.errors import PublishError
from contracts.events import DEFAULT_STREAM, WIRE_FIELD, AnyEvent, Payload, build_event, to_wire
from contracts.redisurl import mask_url

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


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
    ) -> None:
        self._env = _Envelope(redis_url, source, account, plugin_id, mode, stream)
        self._client = client or redis.Redis.from_url(
            redis_url,
            retry=Retry(NoBackoff(), 1),
            **_client_options(timeout_s),
        )

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
        try:
            self._client.xadd(self._env.stream, {WIRE_FIELD: to_wire(event)})
        except redis.RedisError as exc:
            raise self._env.failure(exc) from exc
        return event.id

    def close(self) -> None:
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
    ) -> None:
        self._env = _Envelope(redis_url, source, account, plugin_id, mode, stream)
        self._client = client or aredis.Redis.from_url(
            redis_url,
            retry=AsyncRetry(NoBackoff(), 1),
            **_client_options(timeout_s),
        )

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
        try:
            await self._client.xadd(self._env.stream, {WIRE_FIELD: to_wire(event)})
        except redis.RedisError as exc:
            raise self._env.failure(exc) from exc
        return event.id

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
