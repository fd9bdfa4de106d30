"""``tradescribe check`` for several workers sharing a stream's partitions.

Each worker of partitions beats on its own key (``heartbeat_key(stream, group,
consumer)``) and each partition has one lease holder (``worker.lease``). The check
reads every partition's lease, then judges each holder from its own signed heartbeat
and, from the CLI, from a signed ping every listening worker answers (a copy of a beat
set again can be young; a reply bound to this request cannot be replayed). All is well
only when every partition has a holder that is alive (a fresh beat that verifies, an
answer to the ping), no partition's oldest pending entry is older than the bound and no
worker reported an error within the window. One line says what is wrong and the fix.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from contracts.channelauth import heartbeat_header, verify
from contracts.keys import stream_key
from contracts.partitions import partition_streams
from contracts.redisclient import SyncRedis
from worker.ops.health import MAX_CLOCK_AHEAD_S, heartbeat_key
from worker.ops.status import stream_id_age


@dataclass
class WorkerHealth:
    consumer: str
    partitions: list[int]  # the partitions whose lease it holds now
    alive: bool
    why_not: str | None = None  # when not alive: what is missing
    answered_ping: bool | None = None  # None: not asked (the dashboard)
    heartbeat: dict[str, Any] | None = None


@dataclass
class PartitionHealth:
    partition: int
    stream: str
    holder: str | None  # the lease holder's consumer name
    ok: bool
    pending: int | None = None
    oldest_pending_age_s: float | None = None


@dataclass
class PartitionsHealth:
    stream: str
    ok: bool
    reasons: list[str] = field(default_factory=list)
    workers: list[WorkerHealth] = field(default_factory=list)
    partitions: list[PartitionHealth] = field(default_factory=list)

    @property
    def pending(self) -> int:
        return sum(p.pending or 0 for p in self.partitions)

    def summary(self) -> str:
        if not self.ok:
            return "unhealthy: " + "; ".join(self.reasons)
        alive = [w for w in self.workers if w.alive]
        held = "; ".join(f"{w.consumer} {_braces(w.partitions) or 'none'}" for w in alive)
        ages = [float(w.heartbeat["beat_age_s"]) for w in alive if w.heartbeat is not None]
        return (
            f"ok: {len(alive)} workers hold all {len(self.partitions)} partitions of "
            f"{self.stream} ({held}), beats at most {max(ages, default=0.0):.1f} s old, "
            f"{self.pending} pending"
        )

    def as_dict(self) -> dict[str, Any]:
        oldest = max((p.oldest_pending_age_s or 0.0 for p in self.partitions), default=0.0)
        return {
            "ok": self.ok,
            "reasons": self.reasons,
            "pending": self.pending,
            "oldest_pending_age_s": oldest if self.pending else None,
            "workers": [asdict(w) for w in self.workers],
            "partitions": [asdict(p) for p in self.partitions],
        }


def check_partitions(
    client: SyncRedis,
    stream: str,
    group: str,
    partitions: int,
    *,
    key: bytes,
    answered: set[str] | None,
    max_beat_age_s: float,
    max_pending_age_s: float,
    error_window_s: float,
    min_workers: int | None = None,
) -> PartitionsHealth:
    """Judge the workers of ``partitions`` partition streams and every partition.

    ``answered``: the consumers that answered a signed ping just now (None: not asked,
    then a fresh beat is enough). Raises ``redis.RedisError`` / ``OSError`` when Redis
    cannot be asked."""
    now = time.time()
    streams = partition_streams(stream, partitions)
    health = PartitionsHealth(stream=stream, ok=True)
    holders = _lease_holders(client, streams, group)
    consumers = sorted({c for c in holders if c is not None} | (answered or set()))
    beats = _get_all(client, [heartbeat_key(stream, group, c) for c in consumers])
    for consumer, raw in zip(consumers, beats, strict=True):
        held = [p for p, c in enumerate(holders) if c == consumer]
        health.workers.append(
            _judge_worker(consumer, held, raw, stream, group, key, answered, max_beat_age_s, now)
        )
    alive = {w.consumer for w in health.workers if w.alive}
    for p, (name, holder) in enumerate(zip(streams, holders, strict=True)):
        health.partitions.append(PartitionHealth(p, name, holder, holder in alive))
    _judge(health, alive, partitions, min_workers, error_window_s)
    _check_pending(client, group, max_pending_age_s, health, now)
    health.ok = not health.reasons
    return health


def _lease_holders(client: SyncRedis, streams: list[str], group: str) -> list[str | None]:
    """Each partition's lease holder (its consumer name), None where no lease is held."""
    holders: list[str | None] = []
    for raw in _get_all(client, [stream_key("lease", s, group) for s in streams]):
        try:
            holders.append(str(json.loads(raw)["consumer"]) if raw is not None else None)
        except (ValueError, KeyError, TypeError):
            holders.append("(unreadable lease)")
    return holders


def _get_all(client: SyncRedis, keys: list[str]) -> list[Any]:
    """GET of each key in one round trip (a cluster pipeline sends each to its shard)."""
    if not keys:
        return []
    pipe: Any = client.pipeline(transaction=False)
    for name in keys:
        pipe.get(name)
    return list(pipe.execute())


def _judge_worker(
    consumer: str,
    held: list[int],
    raw: Any,
    stream: str,
    group: str,
    key: bytes,
    answered: set[str] | None,
    max_beat_age_s: float,
    now: float,
) -> WorkerHealth:
    name = heartbeat_key(stream, group, consumer)
    pinged = None if answered is None else consumer in answered
    w = WorkerHealth(consumer, held, alive=False, answered_ping=pinged)
    hb = None
    if raw is not None:
        text = verify(key, heartbeat_header(name), raw.decode(errors="replace"))
        try:
            hb = json.loads(text) if text is not None else None
        except ValueError:
            hb = None
    if raw is None:
        w.why_not = f"no heartbeat at {name}"
    elif not isinstance(hb, dict) or not isinstance(hb.get("at"), int | float):
        w.why_not = f"its heartbeat at {name} is not signed with the channel key (not believed)"
    else:
        hb["beat_age_s"] = round(max(0.0, now - float(hb["at"])), 3)
        w.heartbeat = hb
        if hb["beat_age_s"] > max_beat_age_s:
            w.why_not = f"last heartbeat {hb['beat_age_s']:.1f} s ago (bound {max_beat_age_s:g} s)"
        elif float(hb["at"]) > now + MAX_CLOCK_AHEAD_S:
            w.why_not = "its heartbeat is dated in the future (a clock is wrong)"
    if w.why_not is None and pinged is False:
        w.why_not = "no answer to a signed ping"
    w.alive = w.why_not is None
    return w


def _judge(
    health: PartitionsHealth,
    alive: set[str],
    partitions: int,
    min_workers: int | None,
    error_window_s: float,
) -> None:
    """The reasons: dead holders (named, with their partitions), partitions without a
    holder, too few live workers, recent errors."""
    for w in health.workers:
        if not w.alive and w.partitions:
            health.reasons.append(
                f"worker {w.consumer} is dead or stuck ({w.why_not}) and holds "
                f"{_streams(health, w.partitions)}: restart it, or the live workers take "
                "its partitions once its lease expires (lease_ttl_ms)"
            )
    orphans = [p.partition for p in health.partitions if p.holder is None]
    if orphans:
        fix = (
            "the live workers take them within lease_ttl_ms; if this lasts, check that "
            f"they run with --partitions {partitions}"
            if alive
            else f"start a worker (tradescribe worker --partitions {partitions})"
        )
        health.reasons.append(f"no worker holds {_streams(health, orphans)}: {fix}")
    if min_workers is not None and len(alive) < min_workers:
        names = ", ".join(sorted(alive)) or "none"
        health.reasons.append(
            f"{len(alive)} live workers ({names}), fewer than --min-workers {min_workers}: "
            "one stopped or died; start it again"
        )
    for w in health.workers:
        hb = w.heartbeat or {}
        age = hb.get("last_error_age_s")
        if w.alive and hb.get("last_error") and age is not None:
            age = age + hb["beat_age_s"]
            if age < error_window_s:
                health.reasons.append(
                    f"worker {w.consumer}: error {age:.0f} s ago (window {error_window_s:g} s): "
                    f"{hb['last_error']}"
                )


def _check_pending(
    client: SyncRedis, group: str, bound_s: float, health: PartitionsHealth, now: float
) -> None:
    for p in health.partitions:
        try:
            summary: Any = client.xpending(p.stream, group)
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):  # never consumed yet: nothing pending
                p.pending = 0
                continue
            health.reasons.append(f"cannot read pending entries of {p.stream}: {exc}")
            continue
        p.pending = int(summary["pending"])
        if not p.pending:
            continue
        oldest = summary["min"]
        oldest = oldest.decode() if isinstance(oldest, bytes) else str(oldest)
        p.oldest_pending_age_s = stream_id_age(oldest, now)
        if p.oldest_pending_age_s is not None and p.oldest_pending_age_s > bound_s:
            health.reasons.append(
                f"{p.pending} entries pending in {p.stream}, the oldest ({oldest}) for "
                f"{p.oldest_pending_age_s:.0f} s (bound {bound_s:g} s): its worker "
                f"{p.holder or '(none)'} is not committing"
            )


def _braces(partitions: list[int]) -> str:
    return " ".join(f"{{{p}}}" for p in partitions)


def _streams(health: PartitionsHealth, partitions: list[int]) -> str:
    """``partitions {1} {3} of tradescribe:events``."""
    word = "partition" if len(partitions) == 1 else "partitions"
    return f"{word} {_braces(partitions)} of {health.stream}"
