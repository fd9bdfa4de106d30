"""The worker's side of the request channel: validate, dispatch, reply.

Requests arrive on the pub/sub channel ``tradescribe:requests:<stream>:<group>``
(see ``docs/request-channel.md``). Each one names a command from
:data:`COMMANDS`; its arguments are validated by that command's pydantic model
before the handler sees them. Anything else gets an error reply; nothing a
request carries reaches SQL or the disk, and no request can crash the worker.

Other features plug in a command with::

    @command("query", QueryArgs)
    async def query(worker: Worker, args: QueryArgs) -> dict[str, Any]: ...
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.exceptions import RedisError

from contracts.client import REPLY_KEY_PATTERN, REPLY_TTL_S, request_channel
from contracts.errors import describe_validation_error
from worker.consume import Worker

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 65_536
MAX_CONCURRENT = 32
Handler = Callable[[Worker, Any], Awaitable[dict[str, Any]]]


class NoArgs(BaseModel):
    """Arguments of a command that takes none: any key is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Command:
    handler: Handler
    args: type[BaseModel]


COMMANDS: dict[str, Command] = {}


def command(name: str, args: type[BaseModel] = NoArgs) -> Callable[[Handler], Handler]:
    """Register ``handler(worker, validated_args) -> result dict`` under ``name``."""

    def register(handler: Handler) -> Handler:
        COMMANDS[name] = Command(handler, args)
        return handler

    return register


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    command: str = Field(min_length=1, max_length=64)
    args: dict[str, Any] = Field(default_factory=dict)
    reply_to: str = Field(pattern=REPLY_KEY_PATTERN.pattern)


class RequestError(Exception):
    """A handler raises this to answer with an error code of its own."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def serve_requests(worker: Worker) -> None:
    """Answer requests for as long as the worker runs; reconnect after Redis errors."""
    await worker.ready.wait()
    channel = request_channel(worker.settings.stream, worker.settings.group)
    limiter = anyio.CapacityLimiter(MAX_CONCURRENT)
    delay = 0.1
    async with anyio.create_task_group() as tg:  # handlers outlive a reconnect
        while True:
            try:
                async with worker.redis.pubsub() as pubsub:
                    await pubsub.subscribe(channel)
                    log.info("answering requests on %s", channel)
                    delay = 0.1
                    while True:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=1
                        )
                        if message is not None and message.get("type") == "message":
                            tg.start_soon(_answer_limited, worker, message["data"], limiter)
            except (RedisError, OSError) as exc:
                # The channel is a side door: its trouble must never stop the writer.
                worker.stats.note_error("request channel", exc)
                log.warning("request channel lost (%s); resubscribing in %.1fs", exc, delay)
            await anyio.sleep(delay)
            delay = min(delay * 2, worker.settings.retry_max_s)


async def _answer_limited(worker: Worker, raw: bytes, limiter: anyio.CapacityLimiter) -> None:
    async with limiter:
        await answer(worker, raw)


async def answer(worker: Worker, raw: bytes | str) -> None:
    """Handle one raw request; replies unless the request names no valid reply key."""
    if len(raw) > MAX_REQUEST_BYTES:
        log.warning("ignored a request of %d bytes (limit %d)", len(raw), MAX_REQUEST_BYTES)
        return
    try:
        decoded: Any = json.loads(raw)
    except ValueError as exc:
        log.warning("ignored a request that is not JSON: %s", exc)
        return
    try:
        request = Request.model_validate(decoded)
    except ValidationError as exc:
        reply_to = decoded.get("reply_to") if isinstance(decoded, dict) else None
        if isinstance(reply_to, str) and REPLY_KEY_PATTERN.match(reply_to):
            request_id = decoded.get("id")
            request_id = request_id[:64] if isinstance(request_id, str) else None
            await _reply(worker, reply_to, _error(request_id, "bad_request", _why(exc)))
        else:
            log.warning("ignored a request without a valid reply_to: %s", _why(exc))
        return
    await _reply(worker, request.reply_to, await dispatch(worker, request))


async def dispatch(worker: Worker, request: Request) -> dict[str, Any]:
    """The reply to one well-formed request."""
    found = COMMANDS.get(request.command)
    if found is None:
        known = ", ".join(sorted(COMMANDS))
        return _error(
            request.id, "unknown_command", f"unknown command '{request.command}'; known: {known}"
        )
    try:
        args = found.args.model_validate(request.args)
    except ValidationError as exc:
        return _error(request.id, "bad_args", _why(exc))
    try:
        result = await found.handler(worker, args)
    except RequestError as exc:
        return _error(request.id, exc.code, exc.message)
    except Exception as exc:
        log.exception("request %s (%s) failed", request.id, request.command)
        return _error(request.id, "internal", f"{type(exc).__name__}: {exc}")
    return {"id": request.id, "ok": True, "result": result}


async def _reply(worker: Worker, reply_to: str, reply: dict[str, Any]) -> None:
    try:
        async with worker.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(reply_to, json.dumps(reply, default=str))
            pipe.expire(reply_to, REPLY_TTL_S)
            await pipe.execute()
    except RedisError as exc:
        log.warning("could not send the reply to %s: %s", reply_to, exc)


def _error(request_id: str | None, code: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message}}


def _why(exc: ValidationError) -> str:
    return describe_validation_error(exc)


# -- built-in commands ------------------------------------------------------------


@command("ping")
async def ping(worker: Worker, args: NoArgs) -> dict[str, Any]:
    return {"pong": True, "consumer": worker.settings.consumer, "at": time.time()}


@command("status")
async def status(worker: Worker, args: NoArgs) -> dict[str, Any]:
    from worker.status import collect_status

    return await collect_status(worker)
