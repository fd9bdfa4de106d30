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
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from redis.exceptions import RedisError

from contracts.backoff import Backoff
from contracts.channelauth import reply_header, sign
from contracts.client import REPLY_KEY_PATTERN, REPLY_TTL_S, request_channel
from contracts.errors import describe_validation_error
from worker.consume import Worker

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 65_536
MAX_CONCURRENT = 32  # handlers of slow commands running at once
MAX_SLOW_IN_HAND = 64  # slow requests running or waiting for a slot; more are "busy"
MAX_QUICK_IN_HAND = 16  # ping/status in hand; their own lane, never behind slow ones
MAX_PER_CLIENT = 8  # slow requests in hand for one client id
BUSY_FLUSH = 200  # busy replies sent in one pipeline
Handler = Callable[[Worker, Any], Awaitable[dict[str, Any]]]

# A reply is written only where no key or a list is (a reply key the worker made);
# a key of another type is someone else's and is neither written nor expired.
_WRITE_REPLY = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'none' and kind ~= 'list' then return kind end
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 'ok'
"""


class NoArgs(BaseModel):
    """Arguments of a command that takes none: any key is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Command:
    handler: Handler
    args: type[BaseModel]
    quick: bool = False


COMMANDS: dict[str, Command] = {}


def command(
    name: str, args: type[BaseModel] = NoArgs, *, quick: bool = False
) -> Callable[[Handler], Handler]:
    """Register ``handler(worker, validated_args) -> result dict`` under ``name``.

    ``quick`` commands (no waiting, no database scan) get a lane of their own, so
    they answer while slow ones (``wait``, ``query``) are flooding in."""

    def register(handler: Handler) -> Handler:
        COMMANDS[name] = Command(handler, args, quick)
        return handler

    return register


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    command: str = Field(min_length=1, max_length=64)
    args: dict[str, Any] = Field(default_factory=dict)
    reply_to: str
    client: str = Field("", pattern=r"^[A-Za-z0-9_-]{0,64}$")

    @field_validator("reply_to")
    @classmethod
    def _in_reply_namespace(cls, reply_to: str) -> str:
        if REPLY_KEY_PATTERN.fullmatch(reply_to) is None:  # whole string: no "\n" after it
            raise ValueError(f"must be {REPLY_KEY_PATTERN.pattern}")
        return reply_to


class RequestError(Exception):
    """A handler raises this to answer with an error code of its own."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Lanes:
    """Requests in hand, bounded: past a bound a request is answered "busy" at once."""

    quick: int = 0
    slow: int = 0
    per_client: Counter[str] = field(default_factory=Counter)
    busy: int = 0
    limiter: anyio.CapacityLimiter = field(
        default_factory=lambda: anyio.CapacityLimiter(MAX_CONCURRENT)
    )

    def admit(self, request: Request) -> str | None:
        """Count ``request`` in hand and return None, or say why the worker is busy.

        Counted here, in the reader, not when its task starts: the reader may admit
        thousands of requests before any task runs."""
        if _is_quick(request):
            if self.quick >= MAX_QUICK_IN_HAND:
                return f"{self.quick} quick requests in hand"
            self.quick += 1
            return None
        if self.slow >= MAX_SLOW_IN_HAND:
            return f"{self.slow} requests in hand (at most {MAX_SLOW_IN_HAND})"
        if self.per_client[request.client] >= MAX_PER_CLIENT:
            return f"this client has {MAX_PER_CLIENT} requests in hand"
        self.slow += 1
        self.per_client[request.client] += 1
        return None

    def release(self, request: Request) -> None:
        if _is_quick(request):
            self.quick -= 1
            return
        self.slow -= 1
        self.per_client[request.client] -= 1
        if not self.per_client[request.client]:
            del self.per_client[request.client]

    def as_status(self) -> dict[str, Any]:
        return {"requests_in_hand": self.quick + self.slow, "requests_refused_busy": self.busy}


_lanes: weakref.WeakKeyDictionary[Worker, Lanes] = weakref.WeakKeyDictionary()


def lanes(worker: Worker) -> Lanes:
    """The request counters of ``worker`` (what ``status`` reports)."""
    return _lanes.setdefault(worker, Lanes())


async def serve_requests(worker: Worker, key: bytes) -> None:
    """Answer requests for as long as the worker runs; reconnect after Redis errors.

    Replies are signed with ``key`` (``contracts.channelauth``)."""
    await worker.ready.wait()
    channel = request_channel(worker.settings.stream, worker.settings.group)
    backoff = Backoff(first=0.1, factor=2.0, cap=worker.settings.retry_max_s)
    async with anyio.create_task_group() as tg:  # handlers outlive a reconnect
        while True:
            delay = backoff.next()
            try:
                async with worker.redis.pubsub() as pubsub:
                    await pubsub.subscribe(channel)
                    log.info("answering requests on %s", channel)
                    backoff.reset()
                    delay = backoff.next()
                    await _read_requests(worker, key, pubsub, tg)
            except (RedisError, OSError) as exc:
                # The channel is a side door: its trouble must never stop the writer.
                worker.stats.note_error("request channel", exc)
                log.warning("request channel lost (%s); resubscribing in %.1fs", exc, delay)
            await anyio.sleep(delay)


async def _read_requests(worker: Worker, key: bytes, pubsub: Any, tg: TaskGroup) -> None:
    """Admit each request to its lane, or answer "busy" (batched) when the lane is full."""
    state = lanes(worker)
    busy: list[tuple[str, str]] = []
    while True:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0 if busy else 1)
        if message is None or message.get("type") != "message":
            if busy:
                await _send(worker, busy)
                busy = []
            continue
        parsed = await parse(worker, key, message["data"])
        if parsed is None:
            continue
        why = state.admit(parsed)
        if why is None:
            tg.start_soon(_answer_in_lane, worker, key, parsed, state)
            continue
        state.busy += 1
        text = _error(parsed.id, "busy", f"the worker is busy ({why}); ask again shortly")
        busy.append((parsed.reply_to, _signed(key, parsed, text)))
        if len(busy) >= BUSY_FLUSH:
            await _send(worker, busy)
            busy = []


async def _answer_in_lane(worker: Worker, key: bytes, request: Request, state: Lanes) -> None:
    try:
        if _is_quick(request):
            await _answer(worker, key, request)
        else:
            async with state.limiter:
                await _answer(worker, key, request)
    finally:
        state.release(request)


def _is_quick(request: Request) -> bool:
    found = COMMANDS.get(request.command)
    return found is not None and found.quick


async def _answer(worker: Worker, key: bytes, request: Request) -> None:
    reply = await dispatch(worker, request)
    await _send(worker, [(request.reply_to, _signed(key, request, reply))])


async def answer(worker: Worker, key: bytes, raw: bytes | str) -> None:
    """Handle one raw request in full; replies unless it names no valid reply key."""
    request = await parse(worker, key, raw)
    if request is not None:
        await _answer(worker, key, request)


async def parse(worker: Worker, key: bytes, raw: bytes | str) -> Request | None:
    """The request in ``raw``; None when it is not one (a bad_request reply is sent
    if it names a valid reply key; otherwise it is dropped and logged)."""
    if len(raw) > MAX_REQUEST_BYTES:
        log.warning("ignored a request of %d bytes (limit %d)", len(raw), MAX_REQUEST_BYTES)
        return None
    try:
        decoded: Any = json.loads(raw)
    except ValueError as exc:
        log.warning("ignored a request that is not JSON: %s", exc)
        return None
    try:
        return Request.model_validate(decoded)
    except ValidationError as exc:
        reply_to = decoded.get("reply_to") if isinstance(decoded, dict) else None
        if isinstance(reply_to, str) and REPLY_KEY_PATTERN.fullmatch(reply_to):
            request_id = decoded.get("id")
            request_id = request_id[:64] if isinstance(request_id, str) else None
            command = decoded.get("command")
            command = command[:64] if isinstance(command, str) else ""
            header = reply_header(request_id or "", command, reply_to)
            text = json.dumps(_error(request_id, "bad_request", _why(exc)))
            await _send(worker, [(reply_to, sign(key, header, text))])
        else:
            log.warning("ignored a request without a valid reply_to: %s", _why(exc))
        return None


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


def _signed(key: bytes, request: Request, reply: dict[str, Any]) -> str:
    header = reply_header(request.id, request.command, request.reply_to)
    return sign(key, header, json.dumps(reply, default=str))


async def _send(worker: Worker, replies: list[tuple[str, str]]) -> None:
    """LPUSH each reply (with a TTL) in one round trip; never onto a foreign key."""
    try:
        async with worker.redis.pipeline(transaction=False) as pipe:
            for reply_to, text in replies:
                pipe.eval(_WRITE_REPLY, 1, reply_to, text, REPLY_TTL_S)
            results = await pipe.execute(raise_on_error=False)
    except (RedisError, OSError) as exc:
        log.warning("could not send %d replies: %s", len(replies), exc)
        return
    for (reply_to, _), result in zip(replies, results, strict=True):
        outcome = result.decode() if isinstance(result, bytes) else result
        if isinstance(outcome, Exception):
            log.warning("could not send the reply to %s: %s", reply_to, outcome)
        elif outcome != "ok":
            log.warning("did not write the reply to %s: the key holds a %s", reply_to, outcome)


def _error(request_id: str | None, code: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message}}


def _why(exc: ValidationError) -> str:
    return describe_validation_error(exc)


# -- built-in commands ------------------------------------------------------------


@command("ping", quick=True)
async def ping(worker: Worker, args: NoArgs) -> dict[str, Any]:
    return {"pong": True, "consumer": worker.settings.consumer, "at": time.time()}


@command("status", quick=True)
async def status(worker: Worker, args: NoArgs) -> dict[str, Any]:
    from worker.ops.status import collect_status

    return {**await collect_status(worker), **lanes(worker).as_status()}
