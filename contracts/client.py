"""Ask the running worker something over the Redis request channel.

The protocol (see ``docs/request-channel.md``): PUBLISH a JSON request to
``tradescribe:requests:<stream>:<group>`` naming a reply key; the worker LPUSHes
its signed JSON reply there and sets a 60 s expiry; the client BLPOPs it and
accepts only a reply signed with the channel key for this very request
(``contracts.channelauth``); anything else is refused and waited past.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from contracts.channelauth import load_key, reply_header, verify
from contracts.errors import (
    ForgedReplyError,
    NoWorkerError,
    RedisUnreachableError,
    RequestFailedError,
)
from contracts.events import DEFAULT_STREAM
from contracts.query_model import DeadLetteredError
from contracts.redisclient import TRANSIENT_ERRORS, SyncRedis, publish, sync_client
from contracts.redisurl import mask_url

DEFAULT_GROUP = "tradescribe"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
REPLY_PREFIX = "tradescribe:reply:"
REPLY_KEY_PATTERN = re.compile(r"tradescribe:reply:[0-9a-f]{32}")  # use fullmatch
REPLY_TTL_S = 60
POLL_S = 1.0

log = logging.getLogger(__name__)


def request_channel(stream: str, group: str) -> str:
    """The pub/sub channel the worker consuming ``stream`` with ``group`` listens on."""
    return f"tradescribe:requests:{stream}:{group}"


class Client:
    """A synchronous client of the request channel, for the CLI and for bots.

    >>> with Client("redis://localhost:6379/0") as c:      # doctest: +SKIP
    ...     c.request("status")["committed_events"]
    """

    def __init__(
        self,
        redis_url: str = DEFAULT_REDIS_URL,
        *,
        stream: str = DEFAULT_STREAM,
        group: str = DEFAULT_GROUP,
        timeout_s: float = 2.0,
        connect_timeout_s: float = 2.0,
        client: SyncRedis | None = None,
        channel_key: str | bytes | None = None,
        channel_key_file: str | Path | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.channel = request_channel(stream, group)
        self.timeout_s = timeout_s
        # The worker's key: without it a reply cannot be told from a forged one.
        # None here: $TRADESCRIBE_CHANNEL_KEY or $TRADESCRIBE_CHANNEL_KEY_FILE.
        self._key = load_key(channel_key, channel_key_file)
        self.client_id = uuid.uuid4().hex  # the worker caps slow requests per client id
        self.refused_replies = 0  # replies seen that were unsigned, forged or replayed
        # Replies are awaited in BLPOPs of at most POLL_S, so a socket timeout above
        # that bounds every command, also against a Redis that accepts but hangs.
        try:
            self._client = client or sync_client(
                redis_url,
                socket_connect_timeout=connect_timeout_s,
                socket_timeout=POLL_S + connect_timeout_s,
                retry=Retry(NoBackoff(), 1),
                decode_responses=True,
            )
        except redis.ConnectionError as exc:  # a cluster no node of which answers
            raise RedisUnreachableError(
                f"cannot reach Redis at {mask_url(redis_url)}: {exc} "
                "(check that redis-server is running and the URL is right)"
            ) from exc

    def request(
        self, command: str, args: dict[str, Any] | None = None, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Send one request and return the worker's ``result``.

        Raises ``NoWorkerError`` when nobody listens or answers in time,
        ``RedisUnreachableError`` when Redis cannot be reached, and
        ``RequestFailedError`` when the worker answers with an error.
        """
        return self._ask(command, args, timeout_s, every=False)[0]

    def request_all(
        self, command: str, args: dict[str, Any] | None = None, timeout_s: float | None = None
    ) -> list[dict[str, Any]]:
        """Send one request that every worker listening on the channel answers (several
        workers share a stream's partitions) and return their ``result`` s, in the order
        they came: once as many came as PUBLISH reached, or when ``timeout_s`` ends with
        at least one. Raises as :meth:`request` does; a worker's error reply raises too."""
        return self._ask(command, args, timeout_s, every=True)

    def _ask(
        self, command: str, args: dict[str, Any] | None, timeout_s: float | None, *, every: bool
    ) -> list[dict[str, Any]]:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        request_id = uuid.uuid4().hex
        reply_to = REPLY_PREFIX + uuid.uuid4().hex
        body = json.dumps(
            {
                "id": request_id,
                "command": command,
                "args": args or {},
                "reply_to": reply_to,
                "client": self.client_id,
            }
        )
        header = reply_header(request_id, command, reply_to)
        refused_before = self.refused_replies
        replies: list[str] = []
        try:
            listeners = publish(self._client, self.channel, body)
            if listeners == 0:
                raise NoWorkerError(
                    f"no worker is listening on {self.channel} at {mask_url(self.redis_url)} "
                    "(is `tradescribe worker` running with the same --stream and --group?)"
                )
            deadline = time.monotonic() + timeout
            while len(replies) < (listeners if every else 1):
                reply = self._wait_reply(reply_to, header, deadline)
                if reply is None:
                    break
                replies.append(reply)
        except redis.AuthenticationError as exc:
            raise RedisUnreachableError(
                f"Redis at {mask_url(self.redis_url)} refused the credentials: {exc} "
                "(check the password in the URL)"
            ) from exc
        except TRANSIENT_ERRORS as exc:
            raise RedisUnreachableError(
                f"cannot reach Redis at {mask_url(self.redis_url)}: {exc} "
                "(check that redis-server is running and the URL is right)"
            ) from exc
        refused = self.refused_replies - refused_before
        if not replies and refused:
            raise ForgedReplyError(
                f"no worker answered '{command}' on {self.channel} within {timeout:g} s with "
                f"a reply signed by the channel key; {refused} unsigned or forged "
                "repl(ies) were refused: someone else answers on the channel, or the worker "
                "uses another key (check TRADESCRIBE_CHANNEL_KEY / channel_key_file)"
            )
        if not replies:
            raise NoWorkerError(
                f"no worker answered '{command}' on {self.channel} within {timeout:g} s "
                "(the worker may be overloaded or stuck; try --timeout)"
            )
        return [_result(reply, request_id) for reply in replies]

    def _wait_reply(self, reply_to: str, header: str, deadline: float) -> str | None:
        """The first reply signed for this request; refused ones are counted and skipped."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            popped = self._client.blpop([reply_to], timeout=max(0.01, min(left, POLL_S)))
            if popped is None:
                continue
            raw = popped[1]
            text = verify(self._key, header, raw.decode() if isinstance(raw, bytes) else raw)
            if text is not None:
                return text
            self.refused_replies += 1
            log.warning(
                "refused a reply on %s that is not signed by the worker for this request "
                "(forged, replayed, or another key); still waiting for the worker's",
                self.channel,
            )

    def ping(self, timeout_s: float | None = None) -> float:
        """Round trip to the worker and back, in seconds."""
        started = time.perf_counter()
        self.request("ping", timeout_s=timeout_s)
        return time.perf_counter() - started

    def status(self, timeout_s: float | None = None) -> dict[str, Any]:
        return self.request("status", timeout_s=timeout_s)

    def query(
        self,
        name: str,
        filters: dict[str, Any] | None = None,
        *,
        wait_for: str | None = None,
        wait_timeout_s: float = 5.0,
        timeout_s: float | None = None,
        scope: dict[str, list[str]] | None = None,
    ) -> dict[str, Any]:
        """Run a named query on the worker's database; the same dict as
        ``run_query(db, name, filters).as_dict()`` on the worker's host.

        ``scope`` (``{"accounts": [...], "sources": [...]}``) narrows the answer to
        those accounts (and sources) in SQL, as ``serve`` does for a token; it can
        only narrow what the request would read without it.

        With ``wait_for`` (an event id from ``Publisher.publish``) the worker first
        waits up to ``wait_timeout_s`` (at most 30) until that event is committed,
        so a bot reads its own write. ``timeout_s`` is how long to wait for the
        answer on top of that. Error replies raise ``RequestFailedError`` with
        ``code`` ``bad_args`` (unknown query, bad filter), ``wait_timeout`` or
        ``dead_lettered``.
        """
        args: dict[str, Any] = {"name": name, "filters": _json_filters(filters)}
        if scope is not None:
            args["scope"] = scope
        waited = 0.0
        if wait_for is not None:
            args.update(wait_for=wait_for, wait_timeout_s=wait_timeout_s)
            waited = wait_timeout_s
        base = self.timeout_s if timeout_s is None else timeout_s
        return self.request("query", args, timeout_s=base + waited)

    def wait_for_event(self, event_id: str, timeout_s: float = 5.0) -> bool:
        """True once the worker has committed ``event_id``; False after ``timeout_s``
        (at most 30). Raises ``DeadLetteredError`` if it was dead-lettered instead,
        like ``contracts.query.wait_for_event`` on the worker's host."""
        result = self.request(
            "wait", {"event_id": event_id, "timeout_s": timeout_s}, self.timeout_s + timeout_s
        )
        if result.get("dead_lettered"):
            raise DeadLetteredError(event_id, str(result.get("reason")))
        return bool(result.get("committed"))

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


def _json_filters(filters: dict[str, Any] | None) -> dict[str, Any]:
    """Filter values as JSON scalars: dates become ``YYYY-MM-DD``; None is left out."""
    out: dict[str, Any] = {}
    for key, value in (filters or {}).items():
        if value is None:
            continue
        out[key] = value.isoformat() if isinstance(value, dt.date) else value
    return out


def _result(raw: str, request_id: str) -> dict[str, Any]:
    try:
        reply = json.loads(raw)
    except ValueError as exc:
        raise RequestFailedError("bad_reply", f"the reply is not JSON: {exc}") from exc
    if not isinstance(reply, dict) or reply.get("id") != request_id:
        raise RequestFailedError("bad_reply", "the reply does not answer this request")
    if reply.get("ok"):
        result = reply.get("result")
        return result if isinstance(result, dict) else {"value": result}
    error = reply.get("error") or {}
    raise RequestFailedError(str(error.get("code", "error")), str(error.get("message", "")))
