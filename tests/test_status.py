"""`tradescribe status` and `ping`: what an operator sees, and the exit codes."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest
import redis
import redis.asyncio as aredis

from contracts import AsyncPublisher
from tests.helpers import (
    cli,
    make_settings,
    running_worker,
    wait_for,
    where_flags,
    worker_listening,
)
from worker.embedded import free_port
from worker.ops.status import group_lag
from worker.settings import Settings

STATUS_KEYS = {
    "worker_id", "version", "uptime_s", "redis_url", "redis_version", "stream", "group",
    "committed_events", "committed_by_type", "events_stored", "dead_letters",
    "dead_letters_since_start", "pending", "oldest_pending_age_s", "lag", "lag_source",
    "events_per_s", "last_commit_at", "last_commit_age_s", "batch_size_p50",
    "commit_ms_p50", "commit_ms_p99", "db_path", "db_bytes", "wal_bytes",
    "schema_version", "last_error",
}  # fmt: skip


async def _publish_three_trades_and_one_bad(s: Settings) -> None:
    async with AsyncPublisher(s.redis_url, source="bot-a", stream=s.stream) as pub:
        for n in range(3):
            await pub.publish(
                "trade.opened", trade_id=f"T{n}", symbol="BTCUSDT", side="buy",
                quantity="1", entry_price="100",
            )  # fmt: skip
    client = aredis.Redis.from_url(s.redis_url)
    await client.xadd(s.stream, {"event": '{"type": "trade.opened", "id": "nope"}'})
    await client.aclose()


async def test_status_json_reports_counters_backlog_and_database(settings: Settings) -> None:
    async with running_worker(settings) as worker:
        await worker_listening(settings)
        await _publish_three_trades_and_one_bad(settings)
        await wait_for(lambda: worker.stats.batches and worker.stats.dead_letters == 1)
        await wait_for(lambda: worker.stats.committed == 3, what="three commits")
        result = await cli("status", "--json", *where_flags(settings))
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert not STATUS_KEYS - status.keys()
    assert status["committed_events"] == 3
    assert status["committed_by_type"] == {"trade.opened": 3}
    assert status["events_stored"] == 3
    assert status["dead_letters"] == 1
    assert status["pending"] == 0
    assert status["lag"] == 0
    assert status["schema_version"] >= 1
    assert status["db_path"] == str(settings.db.resolve())
    assert status["db_bytes"] > 0
    assert status["wal_bytes"] > 0
    assert status["commit_ms_p99"] >= status["commit_ms_p50"] > 0
    assert status["events_per_s"] > 0
    assert status["last_error"] is None


async def test_status_table_shows_the_counters_to_a_person(settings: Settings) -> None:
    async with running_worker(settings):
        await worker_listening(settings)
        result = await cli("status", *where_flags(settings))
    assert result.exit_code == 0, result.output
    for label in ("committed events", "pending", "lag", "commit ms p50 / p99", "schema version"):
        assert label in result.stdout
    assert settings.stream in result.stdout


async def test_status_without_a_worker_exits_2_with_one_line(settings: Settings) -> None:
    result = await cli("status", "--timeout", "0.5", *where_flags(settings))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "no worker" in result.stderr


async def test_status_with_unreachable_redis_exits_3_with_another_line(
    settings: Settings,
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = await cli("status", "--timeout", "0.5", "--redis-url", url)
    assert result.exit_code == 3
    assert result.stderr.count("\n") == 1
    assert "cannot reach Redis" in result.stderr


async def test_ping_reports_the_round_trip_and_exits_0(settings: Settings) -> None:
    async with running_worker(settings):
        await worker_listening(settings)
        result = await cli("ping", "--json", *where_flags(settings))
    assert result.exit_code == 0, result.output
    reply = json.loads(result.stdout)
    assert reply["ok"] is True
    assert 0 < reply["rtt_ms"] < 2000


async def test_ping_without_a_worker_exits_2(settings: Settings) -> None:
    result = await cli("ping", *where_flags(settings))
    assert result.exit_code == 2
    assert "no worker" in result.stderr


async def test_status_reports_entries_pending_at_another_consumer(
    tmp_path: Any, redis_url: str, names: dict[str, str], sync_redis: redis.Redis
) -> None:
    s = make_settings(tmp_path / "p.db", redis_url, names, claim_idle_ms=600_000)
    sync_redis.xgroup_create(s.stream, s.group, id="0", mkstream=True)
    sync_redis.xadd(s.stream, {"event": "{}"}, id="1000-0")
    sync_redis.xreadgroup(s.group, "crashed-consumer", {s.stream: ">"})
    async with running_worker(s):
        await worker_listening(s)
        result = await cli("status", "--json", *where_flags(s))
    status = json.loads(result.stdout)
    assert status["pending"] == 1
    assert status["oldest_pending_id"] == "1000-0"
    assert status["oldest_pending_age_s"] > 1_000_000


@pytest.mark.parametrize("delete_one", [False, True], ids=["xinfo", "after-xdel"])
async def test_lag_counts_entries_the_group_has_not_read(
    redis_url: str, names: dict[str, str], delete_one: bool
) -> None:
    client = aredis.Redis.from_url(redis_url)
    try:
        await client.xgroup_create(names["stream"], names["group"], id="0", mkstream=True)
        ids = [await client.xadd(names["stream"], {"event": "{}"}) for _ in range(3)]
        if delete_one:
            await client.xdel(names["stream"], ids[1])
        lag = await group_lag(client, names["stream"], names["group"])
    finally:
        await client.aclose()
    assert lag["lag"] == (2 if delete_one else 3)


async def test_status_against_a_redis_that_hangs_exits_3_in_bounded_time() -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        started = time.monotonic()
        result = await cli("status", "--timeout", "0.5", "--redis-url", url)
        elapsed = time.monotonic() - started
    assert result.exit_code == 3
    assert "cannot reach Redis" in result.stderr
    assert elapsed < 10
