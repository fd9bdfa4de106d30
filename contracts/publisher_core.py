"""What both publishers know and decide, without doing any network I/O.

``Publisher`` (a redis client and a daemon thread) and ``AsyncPublisher`` (an
asyncio client and a task) are shells around one :class:`PublisherCore`. The core
holds the options, the envelope defaults and the spool, and makes every decision;
a shell only talks to Redis and runs the drain. Sending one event::

    wire = core.wire(event)            # refused here if the worker would refuse it
    if core.route(wire):               # False: queued in the spool behind earlier events
        try:
            XADD wire                  # the shell's I/O
            return
        except (RedisError, OSError) as exc:
            core.send_failed(exc, wire)  # spooled (Redis is away) or PublishError raised
    if core.claim_drain():             # the spool holds something and no drain runs
        start the drain

and the drain::

    while (chunk := core.next_chunk()) is not None:   # None: all sent, or closing
        try:
            XADD each of chunk.lines in one pipeline
        except (RedisError, OSError) as exc:
            wait core.chunk_failed(exc) seconds; continue
        core.chunk_sent(chunk)

A drain that is cancelled calls ``core.drain_abandoned()`` so that a later
``claim_drain`` may start another; one that crashes calls ``core.drain_crashed(exc)``
and logs what it returns.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import redis
from redis.exceptions import AuthenticationError, AuthorizationError

from contracts.backoff import Backoff
from contracts.errors import PublishError
from contracts.events import (
    DEFAULT_STREAM,
    MAX_EVENT_BYTES,
    AnyEvent,
    Payload,
    to_wire,
    validate_envelope,
)
from contracts.partitions import check_partitions, stream_for, stream_for_wire
from contracts.redisclient import TRANSIENT_ERRORS
from contracts.redisurl import mask_url
from contracts.spool import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_EVENTS,
    Chunk,
    Spool,
    SpoolStatus,
    default_spool_dir,
)

# The drain's wait between attempts while Redis is away (documented in
# docs/faults-and-security.md: "back-off 50 ms to 2 s").
DRAIN_FIRST_DELAY_S = 0.05
DRAIN_MAX_DELAY_S = 2.0


@dataclass(frozen=True, kw_only=True, slots=True)
class PublisherOptions:
    """Everything a publisher is told besides where Redis is; the same for both.

    ``Publisher(url, options=PublisherOptions(source="my-bot", mode="paper"))`` is the
    same as ``Publisher(url, source="my-bot", mode="paper")``. New options go here,
    not into the constructors.
    """

    source: str
    """The bot's name: the events' ``source``, and the name of its spool file."""
    account: str | None = None
    """Tenancy sent with every event unless a call gives its own; None sends nothing,
    so an earlier event of the same trade is not overridden."""
    plugin_id: str | None = None
    mode: str | None = None
    stream: str = DEFAULT_STREAM
    partitions: int = 1
    """K > 1: each event goes to ``<stream>:{p}``, p chosen by its source
    (:mod:`contracts.partitions`); give the workers the same ``partitions``."""
    timeout_s: float = 0.5
    """Socket connect/read timeout: the longest the first publish of an outage waits."""
    spool: bool = True
    """Spool events locally while Redis is unreachable (False: raise PublishError)."""
    spool_dir: str | Path | None = None
    """Default ``$TRADESCRIBE_SPOOL_DIR``, else ``$XDG_STATE_HOME/tradescribe/spool``."""
    spool_max_bytes: int = DEFAULT_MAX_BYTES
    spool_max_events: int = DEFAULT_MAX_EVENTS
    linger_s: float = 0.0
    """``Publisher`` only. 0: each ``publish`` sends its event and returns once Redis
    has it. > 0 (at most 1): ``publish`` writes the event to the spool file (no fsync)
    and returns; a background thread sends what gathered every ``linger_s`` in one
    pipeline. The call never waits for Redis (its p99 on a busy host: about 1 ms
    against 5), at about the same CPU in all (docs/benchmark.md); an event the bot was
    told about is in Redis or in the spool file, which a crash of the bot keeps (its
    next start sends it), not a crash of the machine. Needs ``spool=True``."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.linger_s <= 1.0:
            raise TypeError(f"linger_s must be between 0 and 1 second, not {self.linger_s!r}")
        if self.linger_s and not self.spool:
            raise TypeError("linger_s > 0 needs spool=True: lingering events wait in the spool")

    @classmethod
    def resolve(
        cls, options: PublisherOptions | None, keywords: dict[str, Any], who: str
    ) -> PublisherOptions:
        """The options a constructor was given, either as ``options=`` or as keywords."""
        if options is not None:
            if keywords:
                raise TypeError(
                    f"{who}() takes options= or option keywords, not both (got options= "
                    f"and {', '.join(sorted(keywords))}); use dataclasses.replace(options, ...)"
                )
            return options
        if "source" not in keywords:
            raise TypeError(
                f"{who}() needs source= (the bot's name) or options=PublisherOptions(source=...)"
            )
        try:
            return cls(**keywords)
        except TypeError as exc:
            raise TypeError(f"{who}(): {exc}") from None


class _RequiredKeywords(TypedDict):
    source: str


class PublisherKeywords(_RequiredKeywords, total=False):
    """The fields of :class:`PublisherOptions` as constructor keywords (a test keeps
    the two equal)."""

    account: str | None
    plugin_id: str | None
    mode: str | None
    stream: str
    partitions: int
    timeout_s: float
    spool: bool
    spool_dir: str | Path | None
    spool_max_bytes: int
    spool_max_events: int
    linger_s: float


def _transient(exc: Exception) -> bool:
    """Redis is away (spool and retry), as opposed to refusing us (tell the bot)."""
    if isinstance(exc, AuthenticationError | AuthorizationError):
        return False
    return isinstance(exc, TRANSIENT_ERRORS)


class PublisherCore:
    """Options, envelope defaults, spool and decisions of one publisher; no network I/O.

    Safe to use from the sync shell's calling threads and its drain thread at once:
    the spool has its own lock, and starting and ending a drain share ``_lock``.
    """

    def __init__(self, redis_url: str, options: PublisherOptions) -> None:
        self.redis_url = redis_url
        self.options = options
        self.stream = options.stream
        try:
            self.partitions = check_partitions(options.partitions)
        except ValueError as exc:
            raise TypeError(f"PublisherOptions: {exc}") from None
        # Tenancy left as None is not sent: the contract's defaults apply without
        # overriding what an earlier event of the same trade said.
        tenancy = {"account": options.account, "plugin_id": options.plugin_id, "mode": options.mode}
        self.defaults: dict[str, Any] = {
            "source": options.source,
            **{k: v for k, v in tenancy.items() if v is not None},
        }
        self.spool: Spool | None = None
        if options.spool:
            where = Path(options.spool_dir) if options.spool_dir is not None else None
            self.spool = Spool(
                where or default_spool_dir(),
                options.source,
                max_bytes=options.spool_max_bytes,
                max_events=options.spool_max_events,
            )
        self.linger_s = options.linger_s
        self.fault: PublishError | None = None  # a lingering drain's refusal (bad password)
        self.closed = False
        self._lock = threading.Lock()
        self._draining = False
        self._backoff = Backoff(first=DRAIN_FIRST_DELAY_S, factor=2.0, cap=DRAIN_MAX_DELAY_S)

    # -- the event -----------------------------------------------------------------

    def build(
        self,
        event_type: str,
        data: dict[str, Any] | Payload | None,
        fields: dict[str, Any],
        envelope: dict[str, Any],
    ) -> AnyEvent:
        """The validated event of a ``publish`` call: its data, fields and envelope."""
        payload: dict[str, Any]
        if data is None:
            payload = fields
        elif isinstance(data, Payload):
            payload = {**data.model_dump(exclude_unset=True), **fields}
        else:
            payload = {**data, **fields} if fields else data
        given = self.defaults.copy()
        for name, value in envelope.items():
            if value is not None:
                given[name] = value
        return validate_envelope(event_type, payload, given)

    @staticmethod
    def wire(event: AnyEvent) -> str:
        """The event's wire JSON; refused at the call when the worker would refuse it."""
        wire = to_wire(event)
        if len(wire) > MAX_EVENT_BYTES // 4 and len(wire.encode()) > MAX_EVENT_BYTES:
            raise PublishError(
                f"event {event.id} is {len(wire.encode())} bytes of JSON, more than the "
                f"{MAX_EVENT_BYTES} a stream entry may hold; it was NOT recorded (send less "
                "in attributes or notes)"
            )
        return wire

    # -- sending -------------------------------------------------------------------

    def stream_of(self, event: AnyEvent) -> str:
        """The stream ``event`` goes to: ``stream``, or its source's partition."""
        return stream_for(self.stream, event.source, self.partitions)

    def stream_of_line(self, line: str) -> str:
        """The stream of a spooled line (its source read from the JSON when partitioned)."""
        return stream_for_wire(self.stream, line, self.partitions)

    def route(self, wire: str) -> bool:
        """True: send ``wire`` to Redis now. False: events wait in the spool, so it was
        appended behind them (one publisher's order holds); the shell then calls
        ``claim_drain``."""
        spool = self.spool
        if spool is None:
            return True
        if self.linger_s:
            if self.fault is not None:
                raise self.fault
            # Lingering: always through the spool; fsync'd only while Redis is away.
            spool.append(wire, durable=spool.last_error is not None)
            return False
        if spool.pending:
            spool.append(wire)
            return False
        return True

    def send_failed(self, exc: Exception, wire: str) -> None:
        """Redis did not take ``wire``: spool it when Redis is away (the shell then calls
        ``claim_drain``), else raise the PublishError the bot should see."""
        spool = self.spool
        if spool is None or not _transient(exc):
            raise self.failure(exc) from exc
        spool.last_error = str(exc)
        spool.append(wire)

    def failure(self, exc: Exception) -> PublishError:
        where = mask_url(self.redis_url)
        if isinstance(exc, redis.ResponseError) and "OOM" in str(exc):
            hint = "Redis is out of memory; raise maxmemory (tradescribe needs noeviction)"
        else:
            hint = "check that redis-server is running and the URL is right"
        return PublishError(f"cannot publish to Redis at {where}: {exc} ({hint})")

    # -- the spool and its drain ---------------------------------------------------

    @property
    def pending(self) -> int:
        """Events waiting in the spool (0 without one)."""
        return self.spool.pending if self.spool is not None else 0

    def status(self) -> SpoolStatus | None:
        return self.spool.status() if self.spool is not None else None

    def claim_drain(self) -> bool:
        """True when the shell should start a drain now: events wait, the publisher is
        open and no drain runs. The caller that gets True owns the drain until
        ``next_chunk`` returns None or it calls ``drain_abandoned``."""
        if not self.pending:
            return False
        with self._lock:
            if self._draining or self.closed:
                return False
            self._draining = True
            self._backoff.reset()
            return True

    def next_chunk(self) -> Chunk | None:
        """The drain's next lines to send, oldest first; None ends the drain (all sent,
        or the publisher is closing), and a later ``claim_drain`` may start another."""
        spool = self.spool
        assert spool is not None, "a drain runs only with a spool"
        chunk = None if self.closed else spool.chunk()
        if chunk is None:
            with self._lock:
                # Looked at again under the lock: an event spooled meanwhile is either
                # seen here or its publisher finds no drain running and starts one.
                chunk = None if self.closed else spool.chunk()
                if chunk is None:
                    self._draining = False
        return chunk

    def chunk_sent(self, chunk: Chunk) -> None:
        """Redis took these lines: move past them; the next outage backs off from 50 ms."""
        assert self.spool is not None
        self.spool.advance(chunk)
        self._backoff.reset()
        self.fault = None

    def chunk_failed(self, exc: Exception) -> float:
        """Redis did not take the chunk: note why (``spool_status().last_error``) and
        return how long to wait before trying again (50 ms doubling to 2 s)."""
        assert self.spool is not None
        self.spool.last_error = str(exc)
        if self.linger_s:
            self.spool.sync()  # what lingered is now promised to the disk, as spooled events are
            if not _transient(exc):
                self.fault = self.failure(exc)  # the bot's next publish raises it
        return self._backoff.next()

    def drain_abandoned(self) -> None:
        """The drain stopped before ``next_chunk`` returned None (cancelled, or could
        not be started): a later ``claim_drain`` may start another."""
        with self._lock:
            self._draining = False

    def drain_crashed(self, exc: Exception) -> str:
        """The drain failed on something other than Redis (a corrupt spool file): no
        drain starts again in this process, which would only fail the same way; new
        events queue in the spool. Returns the message for the shell to log, which
        ``spool_status().last_error`` shows too."""
        where = self.spool.directory if self.spool is not None else "the spool"
        message = (
            f"the spool drain of {self.options.source!r} stopped: {exc}; events wait in "
            f"{where} (and new ones queue behind them) until the publisher is restarted"
        )
        if self.spool is not None:
            self.spool.last_error = message
        return message

    # -- closing -------------------------------------------------------------------

    def stop_draining(self) -> None:
        """No new drain starts, and a running one ends at its next ``next_chunk``."""
        self.closed = True

    def close(self) -> None:
        """Close the spool; what waits in it stays on disk for the next start."""
        self.closed = True
        if self.spool is not None:
            self.spool.close()
