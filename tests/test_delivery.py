"""Delivery semantics: at-least-once transport, exactly-once effect."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
import redis
import redis.asyncio as aredis

from contracts import AsyncPublisher, Publisher, build_event, new_event_id, to_wire
from tests.helpers import (
    WorkerProcess,
    count,
    foreign_write_lock,
    make_settings,
    pending,
    publish_many,
    query,
    running_worker,
    wait_for,
)
from worker.consume import attempts_key
from worker.lease import RedisLease, worker_identity
from worker.settings import Settings

pytestmark = pytest.mark.delivery

TS = "2026-11-22T10:00:00+00:00"


def wire(event_type: str, source: str = "bot-a", **data: object) -> str:
    event = build_event(event_type, data, source=source, ts=dt.datetime.fromisoformat(TS))
    return to_wire(event)


ROUND_TRIP = [
    ("trade.opened", {"trade_id": "T1", "symbol": "BTCUSDT", "side": "buy", "quantity": "0.5",
                      "entry_price": "43000.5", "stop_loss": "42000", "take_profit": "45000",
                      "strategy": "breakout", "atr_at_entry": "350.2"},
     "trades", "trade_id = 'T1' AND entry_price = 43000.5 AND strategy = 'breakout' "
     "AND json_extract(attributes, '$.atr_at_entry') = '350.2'"),
    ("trade.updated", {"trade_id": "T1", "current_price": "43500", "unrealized_pnl": "250"},
     "trades", "current_price = 43500 AND unrealized_pnl = 250"),
    ("trade.closed", {"trade_id": "T1", "exit_price": "44000", "realized_pnl": "500",
                      "exit_reason": "take_profit"},
     "trades", "status = 'closed' AND realized_pnl = 500 AND closed_at IS NOT NULL"),
    ("signal.emitted", {"signal_id": "S1", "symbol": "ETHUSDT", "side": "sell",
                        "entry_price": "2300", "confidence": "87"},
     "signals", "signal_id = 'S1' AND emitted_at IS NOT NULL AND confidence = 87"),
    ("signal.updated", {"signal_id": "S1", "current_price": "2250", "unrealized_pnl": "50"},
     "signals", "current_price = 2250"),
    ("signal.closed", {"signal_id": "S1", "exit_price": "2200", "realized_pnl": "100"},
     "signals", "status = 'closed' AND realized_pnl = 100"),
    ("position.updated", {"symbol": "NIFTY24NOVFUT", "quantity": "-50", "entry_price": "24100",
                          "exchange": "NFO", "lot_size": "25"},
     "positions", "position_key = 'NIFTY24NOVFUT' AND quantity = -50 AND is_active = 1"),
    ("daily_stats.updated", {"date": "2026-11-22", "daily_loss_used": "1200",
                             "daily_loss_limit": "5000", "number_of_trades": 7},
     "daily_stats", "date = '2026-11-22' AND daily_loss_used = 1200 AND number_of_trades = 7"),
    ("journal.entry", {"text": "Closed T1 at target", "trade_id": "T1", "tags": ["win"]},
     "journal_entries", "trade_id = 'T1' AND tags = '[\"win\"]'"),
    ("audit.event", {"action": "config.changed", "user": "ops", "details": {"risk": 0.01}},
     "audit_log", "action = 'config.changed' AND details = '{\"risk\":0.01}'"),
]  # fmt: skip


async def test_each_event_type_lands_in_its_projection(settings: Settings) -> None:
    async with running_worker(settings):
        async with AsyncPublisher(
            settings.redis_url, source="bot-a", account="ACC1", mode="paper",
            stream=settings.stream,
        ) as pub:  # fmt: skip
            for event_type, data, _, _ in ROUND_TRIP:
                await pub.publish(event_type, data)
        await wait_for(lambda: count(settings.db, "events") == len(ROUND_TRIP))
    for event_type, _, table, where in ROUND_TRIP:
        assert count(settings.db, table, where) == 1, f"{event_type} not in {table} ({where})"
    assert count(settings.db, "trades", "account = 'ACC1' AND mode = 'paper'") == 1
    assert count(settings.db, "trade_status_history") == 2  # opened, closed
    assert count(settings.db, "dead_letters") == 0


def test_sync_publisher_returns_the_id_it_stored(
    settings: Settings, worker_process: Callable[..., WorkerProcess]
) -> None:
    worker_process()
    with Publisher(settings.redis_url, source="sync-bot", stream=settings.stream) as pub:
        event_id = pub.publish("journal.entry", text="hello")
    anyio.run(wait_for, lambda: count(settings.db, "journal_entries") == 1)
    assert query(settings.db, "SELECT event_id, source FROM events") == [(event_id, "sync-bot")]


async def test_same_id_published_twice_is_stored_once(
    settings: Settings, sync_redis: redis.Redis
) -> None:
    event_id = new_event_id()
    body = json.loads(wire("journal.entry", text="once"))
    body["id"] = event_id
    for _ in range(2):
        sync_redis.xadd(settings.stream, {"event": json.dumps(body)})
    async with running_worker(settings) as worker:
        await wait_for(lambda: worker.stats.duplicates == 1, what="the duplicate to be refused")
    assert query(settings.db, "SELECT event_id FROM events") == [(event_id,)]
    assert count(settings.db, "journal_entries") == 1


async def test_redelivered_entries_are_stored_once(
    settings: Settings, sync_redis: redis.Redis, names: dict[str, str]
) -> None:
    publish_many(sync_redis, settings.stream, 500)
    async with running_worker(settings):
        await wait_for(lambda: count(settings.db, "events") == 500)
    # Rewind the group: every committed entry is delivered again, as after a lost ack.
    sync_redis.xgroup_setid(settings.stream, settings.group, "0")
    async with running_worker(settings) as worker:
        await wait_for(lambda: worker.stats.duplicates == 500, what="500 redeliveries")
        assert worker.stats.committed == 0
    assert count(settings.db, "events") == 500
    assert count(settings.db, "trades") == 500
    assert pending(sync_redis, names) == 0


async def test_invalid_message_is_dead_lettered_and_its_batch_committed(
    settings: Settings, sync_redis: redis.Redis, names: dict[str, str]
) -> None:
    sync_redis.xadd(settings.stream, {"event": wire("journal.entry", text="before")})
    bad = json.loads(wire("trade.opened", trade_id="B", symbol="X", side="buy", quantity="1",
                          entry_price="1"))  # fmt: skip
    bad["data"]["quantity"] = "-5"
    bad_id = sync_redis.xadd(settings.stream, {"event": json.dumps(bad)}).decode()
    sync_redis.xadd(settings.stream, {"event": b"\xff not json"})
    sync_redis.xadd(settings.stream, {"wrong": "field"})
    sync_redis.xadd(settings.stream, {"event": wire("journal.entry", text="after")})
    async with running_worker(settings) as worker:
        await wait_for(lambda: count(settings.db, "dead_letters") == 3)
        assert worker.stats.batches == 1  # all five were in one batch
    assert count(settings.db, "journal_entries") == 2
    reasons = query(settings.db, "SELECT stream_id, event_id, reason FROM dead_letters ORDER BY id")
    assert reasons[0] == (
        bad_id,
        bad["id"],
        "invalid event: data.quantity: Input should be greater than 0",
    )
    assert reasons[1][2].startswith("not UTF-8: ")
    assert reasons[2][2] == "entry has no 'event' field (it has: wrong)"
    raw = query(settings.db, "SELECT raw FROM dead_letters WHERE stream_id = ?", (bad_id,))
    assert json.loads(raw[0][0]) == bad  # the exact bytes, kept for replay
    assert pending(sync_redis, names) == 0


def test_worker_killed_mid_stream_stores_every_event_exactly_once(
    settings: Settings,
    sync_redis: redis.Redis,
    names: dict[str, str],
    worker_process: Callable[..., WorkerProcess],
) -> None:
    s = settings.model_copy(update={"batch_max": 500})
    proc = worker_process(s)
    ids = publish_many(sync_redis, s.stream, 20_000)
    anyio.run(wait_for, lambda: count(s.db, "events") >= 4000)
    proc.kill()
    stored_at_kill = count(s.db, "events")
    worker_process(s, "worker-2.log")
    anyio.run(wait_for, lambda: count(s.db, "events") == 20_000, 60)
    anyio.run(wait_for, lambda: pending(sync_redis, names) == 0)
    print(f"sent 20000, stored {stored_at_kill} before SIGKILL, 20000 after restart")
    assert {r[0] for r in query(s.db, "SELECT event_id FROM events")} == set(ids)
    assert count(s.db, "trades") == 20_000
    assert stored_at_kill < 20_000, "the kill came too late to prove anything"


def test_sigterm_during_a_burst_exits_0_and_loses_nothing(
    settings: Settings,
    sync_redis: redis.Redis,
    names: dict[str, str],
    worker_process: Callable[..., WorkerProcess],
) -> None:
    s = settings.model_copy(update={"batch_max": 200})
    proc = worker_process(s)
    publish_many(sync_redis, s.stream, 10_000)
    anyio.run(wait_for, lambda: count(s.db, "events") >= 1000)
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0, proc.output()
    assert pending(sync_redis, names) == 0  # the batch in hand was committed and acked
    stored = count(s.db, "events")
    assert "stopped: committed=" in proc.output()
    worker_process(s, "worker-2.log")
    anyio.run(wait_for, lambda: count(s.db, "events") == 10_000, 60)
    print(f"sent 10000, {stored} stored before SIGTERM, 10000 after restart")


def test_second_worker_on_the_same_database_refuses_to_start(
    settings: Settings, tmp_path: Path, worker_process: Callable[..., WorkerProcess]
) -> None:
    first = worker_process()
    anyio.run(wait_for, settings.db.exists)
    anyio.run(wait_for, lambda: "started" in first.output())
    other_stream = settings.model_copy(update={"stream": settings.stream + ":2"})
    second = worker_process(other_stream, "second.log")
    assert second.wait() == 1
    out = second.output()
    assert f"pid {first.process.pid}" in out, out  # type: ignore[union-attr]
    assert "is writing to" in out, out  # type: ignore[union-attr]
    assert "Traceback" not in out


def test_second_worker_on_the_same_group_refuses_to_start(
    settings: Settings, tmp_path: Path, worker_process: Callable[..., WorkerProcess]
) -> None:
    first = worker_process()
    anyio.run(wait_for, lambda: "started" in first.output())
    elsewhere = settings.model_copy(update={"db": tmp_path / "other.db"})
    second = worker_process(elsewhere, "second.log")
    assert second.wait() == 1
    out = second.output()
    assert f"pid {first.process.pid}" in out, out  # type: ignore[union-attr]
    assert "already consumes" in out, out  # type: ignore[union-attr]


async def test_worker_restarts_after_kill_without_waiting_for_its_lease(
    settings: Settings, worker_process: Callable[..., WorkerProcess]
) -> None:
    s = settings.model_copy(update={"lease_ttl_ms": 60_000})
    first = worker_process(s)
    await wait_for(lambda: "started" in first.output())
    first.kill()
    second = worker_process(s, "second.log")
    await wait_for(lambda: "started" in second.output(), 10)


async def test_a_lease_held_by_a_zombie_process_does_not_block_a_restart(
    settings: Settings,
) -> None:
    """A worker that exited but was not yet reaped (state Z) holds nothing any more."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited; left unreaped
        zombie = {**worker_identity("crashed"), "pid": child.pid}
        client = aredis.Redis.from_url(settings.redis_url)
        lease = RedisLease(client, settings.stream, settings.group, worker_identity("new"), 60_000)
        await client.set(lease.key, json.dumps(zombie), px=60_000)
        with anyio.fail_after(2):
            await lease.acquire()
        assert json.loads(await client.get(lease.key))["consumer"] == "new"
        await client.aclose()
    finally:
        child.wait()


async def test_stream_is_trimmed_only_below_what_was_committed(
    tmp_path: Path, redis_url: str, names: dict[str, str], sync_redis: redis.Redis
) -> None:
    s = make_settings(tmp_path / "t.db", redis_url, names, trim_keep_s=0.001)
    publish_many(sync_redis, s.stream, 300)
    async with running_worker(s) as worker:
        await wait_for(lambda: count(s.db, "events") == 300)
        # acknowledged after the commit (beside the next one): only then trimmable
        await wait_for(lambda: pending(sync_redis, names) == 0)
        publish_many(sync_redis, s.stream, 5, source="late")  # may still be unread
        trimmed = await worker.trim()
    assert trimmed >= 299
    remaining = sync_redis.xrange(s.stream)
    late = [e for e in remaining if b'"late"' in e[1][b"event"]]
    assert len(late) == 5 or count(s.db, "events", "source = 'late'") == 5


async def test_an_entry_redelivered_by_restarts_alone_is_stored_not_dead_lettered(
    settings: Settings, sync_redis: redis.Redis, names: dict[str, str]
) -> None:
    """Restarts redeliver; that proves nothing against the entry (issue 14)."""
    s = settings.model_copy(update={"max_deliveries": 3})
    sync_redis.xgroup_create(s.stream, s.group, id="0", mkstream=True)
    sync_redis.xadd(s.stream, {"event": wire("journal.entry", text="redelivered")})
    # Five earlier workers read it as this consumer and were stopped before committing it.
    for start in (">", "0", "0", "0", "0"):
        sync_redis.xreadgroup(s.group, s.consumer, {s.stream: start}, count=10)
    sync_redis.xadd(s.stream, {"event": wire("journal.entry", text="fine")})
    async with running_worker(s):
        await wait_for(lambda: count(s.db, "journal_entries") == 2)
        await wait_for(lambda: pending(sync_redis, names) == 0)
    assert count(s.db, "dead_letters") == 0
    assert sync_redis.hlen(attempts_key(s.stream, s.group)) == 0


async def test_entries_redelivered_by_restarts_are_committed_together_not_one_by_one(
    settings: Settings, sync_redis: redis.Redis, names: dict[str, str]
) -> None:
    """After a crash loop or a lock, the redelivered backlog is caught up in batches: only
    entries whose counted attempt never ended are decoded alone (a user saw 6,000 events
    take 4,001 transactions)."""
    s = settings.model_copy(update={"max_deliveries": 2})
    sync_redis.xgroup_create(s.stream, s.group, id="0", mkstream=True)
    ids = publish_many(sync_redis, s.stream, 600)
    for start in (">", "0", "0", "0"):  # four workers stopped before committing them
        sync_redis.xreadgroup(s.group, s.consumer, {s.stream: start}, count=1000)
    async with running_worker(s) as worker:
        await wait_for(lambda: count(s.db, "events") == 600)
        await wait_for(lambda: pending(sync_redis, names) == 0)
        batches = worker.stats.batches
    assert batches <= 2, batches  # 600 entries in one read (batch_max 2000)
    assert count(s.db, "dead_letters") == 0
    assert {r[0] for r in query(s.db, "SELECT event_id FROM events")} == set(ids)
    assert sync_redis.hlen(attempts_key(s.stream, s.group)) == 0


async def test_an_entry_that_stopped_the_worker_max_deliveries_times_is_dead_lettered(
    settings: Settings, sync_redis: redis.Redis, names: dict[str, str]
) -> None:
    """An attempt at a redelivered entry is counted in Redis around its decoding; a worker
    killed there leaves the count behind. Three such counts (as three dead workers leave
    them) make the fourth attempt a dead letter; the entry's neighbour is stored."""
    s = settings.model_copy(update={"max_deliveries": 3})
    sync_redis.xgroup_create(s.stream, s.group, id="0", mkstream=True)
    killer = sync_redis.xadd(s.stream, {"event": wire("journal.entry", text="x")}).decode()
    for start in (">", "0", "0", "0"):
        sync_redis.xreadgroup(s.group, s.consumer, {s.stream: start}, count=10)
    sync_redis.hset(attempts_key(s.stream, s.group), killer, 3)
    sync_redis.xadd(s.stream, {"event": wire("journal.entry", text="fine")})
    async with running_worker(s):
        await wait_for(lambda: count(s.db, "journal_entries") == 1)
        await wait_for(lambda: count(s.db, "dead_letters") == 1)
        await wait_for(lambda: pending(sync_redis, names) == 0)
    (row,) = query(s.db, "SELECT stream_id, reason, deliveries FROM dead_letters")
    assert row[0] == killer
    assert row[1] == "stopped the worker 3 times while being decoded"
    assert row[2] > 3
    assert sync_redis.hlen(attempts_key(s.stream, s.group)) == 0


async def test_a_commit_stalled_past_claim_idle_does_not_claim_and_store_its_own_batch_again(
    settings: Settings, sync_redis: redis.Redis, names: dict[str, str]
) -> None:
    """XAUTOCLAIM must not hand the worker its own batch in hand: a dead letter once, not twice."""
    s = settings.model_copy(
        update={"claim_idle_ms": 300, "claim_interval_s": 0.1, "busy_timeout_ms": 100}
    )
    async with running_worker(s) as worker:
        sync_redis.xadd(s.stream, {"event": wire("journal.entry", text="first")})
        await wait_for(lambda: count(s.db, "events") == 1, what="the first event")
        with foreign_write_lock(s.db):
            sync_redis.xadd(s.stream, {"event": wire("journal.entry", text="second")})
            await wait_for(lambda: "locked" in (worker.stats.last_error or ""), 10, "the lock")
            good = wire("trade.opened", trade_id="X", symbol="BTCUSDT", side="buy",
                        quantity="1", entry_price="1")  # fmt: skip
            bad = good.replace('"quantity":"1"', '"quantity":"-1"')
            bad_id = sync_redis.xadd(s.stream, {"event": bad}).decode()
            # The scenario, not a wait for a condition: time passes with the commit stalled,
            # so both batches go idle well past claim_idle_ms (300 ms) and the claim loop
            # (every 0.1 s) sees them several times.
            await anyio.sleep(1.5)
        await wait_for(lambda: count(s.db, "events") == 2, what="the second event")
        await wait_for(lambda: count(s.db, "dead_letters") >= 1, what="the dead letter")
        await wait_for(lambda: pending(sync_redis, names) == 0, what="nothing pending")
        # Not a wait for a condition but a window in which nothing may happen: a wrongful
        # claim taken before the acks would be committed in it (no counter tells us that a
        # claim cycle ran, so there is no condition to wait for).
        await anyio.sleep(0.5)
        assert worker.stats.dead_letters == 1
        assert worker.stats.duplicates == 0
    assert query(s.db, "SELECT stream_id FROM dead_letters") == [(bad_id,)]
