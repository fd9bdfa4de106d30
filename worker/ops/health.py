"""The heartbeat key and the health check that reads it.

The worker writes ``tradescribe:heartbeat:{<stream>}:<group>`` (``contracts.keys``) every
``heartbeat_interval_s`` with a TTL of ``heartbeat_ttl_s``; the value is the
JSON of its identity and counters, signed with the channel key and bound to the
key's name and the beat's time (``contracts.channelauth``). ``tradescribe
check`` believes only a beat that verifies and is recent, then reads the
stream's pending entries and says whether all is well.

A worker of stream partitions (``partitions`` > 1) beats on a key of its own,
``tradescribe:heartbeat:{<stream>}:<group>:<consumer>``, still in the stream's slot,
and its beat lists the partitions it holds; :mod:`worker.ops.partition_health` judges
those workers and partitions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import redis
from redis.exceptions import RedisError

from contracts.channelauth import heartbeat_header, sign, verify
from contracts.keys import stream_key
from contracts.redisclient import SyncRedis
from worker.consume import Worker
from worker.ops.status import counters, database_status, identity, redis_backlog, stream_id_age
from worker.settings import Settings

log = logging.getLogger(__name__)


def heartbeat_key(stream: str, group: str, consumer: str | None = None) -> str:
    """In the stream's hash slot (``contracts.keys``); with ``consumer``, that worker's
    own key (the stream's tag comes first in the name, so the slot stays the stream's)."""
    key = stream_key("heartbeat", stream, group)
    return key if consumer is None else f"{key}:{consumer}"


def worker_heartbeat_key(s: Settings) -> str:
    """The key a worker beats on: the stream's and group's for a single worker, its own
    (by consumer name) for a worker of partitions, so that several never share one."""
    return heartbeat_key(s.stream, s.group, s.consumer if s.partitions > 1 else None)


def heartbeat_value(worker: Worker) -> dict[str, Any]:
    return {**identity(worker), **counters(worker.stats)}


MAX_CLOCK_AHEAD_S = 5.0  # a beat from further in the future is not believed


async def beat(worker: Worker, key: bytes) -> None:
    name = worker_heartbeat_key(worker.settings)
    value = sign(key, heartbeat_header(name), json.dumps(heartbeat_value(worker), default=str))
    await worker.redis.set(name, value, px=int(worker.settings.heartbeat_ttl_s * 1000))


async def keep_heartbeat(worker: Worker, key: bytes) -> None:
    """Beat until cancelled; on a clean stop, remove the key so checks fail at once (its
    own key only: other workers' beats stay)."""
    s = worker.settings
    await worker.ready.wait()
    try:
        while True:
            try:
                await beat(worker, key)
            except (RedisError, OSError) as exc:
                worker.stats.note_error("redis unreachable", exc)
                log.warning("could not write the heartbeat: %s", exc)
            await anyio.sleep(s.heartbeat_interval_s)
    finally:
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(2),
            contextlib.suppress(RedisError, OSError),
        ):
            await worker.redis.delete(worker_heartbeat_key(s))


@dataclass
class Health:
    ok: bool
    reasons: list[str] = field(default_factory=list)
    heartbeat: dict[str, Any] | None = None
    pending: int | None = None
    oldest_pending_age_s: float | None = None

    def summary(self) -> str:
        if self.ok:
            hb = self.heartbeat or {}
            return (
                f"ok: worker {hb.get('worker_id')} beat {hb.get('beat_age_s')} s ago "
                f"(then: {hb.get('committed_events')} events committed since start), "
                f"{self.pending} pending"
            )
        return "unhealthy: " + "; ".join(self.reasons)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reasons": self.reasons,
            "pending": self.pending,
            "oldest_pending_age_s": self.oldest_pending_age_s,
            "heartbeat": self.heartbeat,
        }


def check_health(
    client: SyncRedis,
    stream: str,
    group: str,
    *,
    key: bytes,
    max_beat_age_s: float,
    max_pending_age_s: float,
    error_window_s: float,
) -> Health:
    """Judge the worker from its heartbeat (signed with ``key``) and the pending entries.

    Raises ``redis.RedisError`` / ``OSError`` when Redis cannot be asked.
    """
    now = time.time()
    health = Health(ok=True)
    hb = _read_beat(client, stream, group, key, health)
    if hb is not None:
        hb["beat_age_s"] = round(max(0.0, now - float(hb.get("at", 0))), 3)
        health.heartbeat = hb
        if hb["beat_age_s"] > max_beat_age_s:
            health.reasons.append(
                f"last heartbeat {hb['beat_age_s']:.1f} s ago (bound {max_beat_age_s:g} s)"
            )
        elif float(hb.get("at", 0)) > now + MAX_CLOCK_AHEAD_S:
            health.reasons.append(
                f"the heartbeat is dated {float(hb['at']) - now:.0f} s in the future: "
                "this host's clock or the worker's is wrong"
            )
        error_age = hb.get("last_error_age_s")
        if hb.get("last_error") and error_age is not None:
            error_age = error_age + hb["beat_age_s"]
            if error_age < error_window_s:
                health.reasons.append(
                    f"error {error_age:.0f} s ago (window {error_window_s:g} s): {hb['last_error']}"
                )
    _check_pending(client, stream, group, max_pending_age_s, health, now)
    health.ok = not health.reasons
    return health


def _read_beat(
    client: SyncRedis, stream: str, group: str, key: bytes, health: Health
) -> dict[str, Any] | None:
    """The heartbeat's counters if the worker signed them; else a reason in ``health``."""
    name = heartbeat_key(stream, group)
    raw: Any = client.get(name)
    if raw is None:
        health.reasons.append(
            f"no heartbeat at {name}: no worker consumes group '{group}' of '{stream}' "
            "(or it stopped beating over a TTL ago; workers of partitions: --partitions K)"
        )
        return None
    text = verify(key, heartbeat_header(name), raw.decode(errors="replace"))
    try:
        hb = json.loads(text) if text is not None else None
    except ValueError:
        hb = None
    if not isinstance(hb, dict) or not isinstance(hb.get("at"), int | float):
        health.reasons.append(
            f"the heartbeat at {name} is not signed with the channel key: written by "
            "someone else (forged) or by a worker with another key; not believed"
        )
        return None
    return hb


def _check_pending(
    client: SyncRedis, stream: str, group: str, bound_s: float, health: Health, now: float
) -> None:
    try:
        summary: Any = client.xpending(stream, group)
    except redis.ResponseError as exc:
        health.reasons.append(f"cannot read pending entries of group '{group}': {exc}")
        return
    health.pending = int(summary["pending"])
    if not health.pending:
        return
    oldest = summary["min"]
    oldest = oldest.decode() if isinstance(oldest, bytes) else str(oldest)
    age = stream_id_age(oldest, now)
    health.oldest_pending_age_s = age
    if age is not None and age > bound_s:
        health.reasons.append(
            f"{health.pending} entries pending, the oldest ({oldest}) for {age:.0f} s "
            f"(bound {bound_s:g} s): the worker is not committing"
        )


async def log_ready(worker: Worker) -> None:
    """One INFO line once the worker reads: what is stored and what waits in Redis."""
    await worker.ready.wait()
    db = await database_status(worker)
    backlog = await redis_backlog(worker)
    values = {
        "events_stored": db["events_stored"],
        "dead_letters": db["dead_letters"],
        "schema_version": db["schema_version"],
        "pending": backlog["pending"],
        "lag": backlog["lag"],
    }
    log.info(
        "worker %s ready: %s",
        worker.settings.consumer,
        " ".join(f"{k}={v}" for k, v in values.items()),
        extra={"counters": values},
    )
