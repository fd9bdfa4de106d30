"""Heartbeat, `tradescribe check` and the systemd notify protocol, with real parts."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from contracts import AsyncPublisher
from contracts.channelauth import heartbeat_header, sign
from tests.helpers import cli, make_settings, running_worker, wait_for, where_flags
from worker.ops.health import heartbeat_key
from worker.settings import Settings


@pytest.fixture
def fast_beat(tmp_path: Path, redis_url: str, names: dict[str, str]) -> Settings:
    return make_settings(
        tmp_path / "h.db", redis_url, names, heartbeat_interval_s=0.05, busy_timeout_ms=0
    )


def _beat(client: redis.Redis, s: Settings) -> dict[str, Any] | None:
    raw = client.get(heartbeat_key(s.stream, s.group))
    return json.loads(raw) if raw else None


async def test_heartbeat_key_holds_counters_with_a_ttl_and_goes_on_clean_stop(
    fast_beat: Settings, sync_redis: redis.Redis
) -> None:
    key = heartbeat_key(fast_beat.stream, fast_beat.group)
    async with running_worker(fast_beat):
        async with AsyncPublisher(
            fast_beat.redis_url, source="bot", stream=fast_beat.stream
        ) as pub:
            await pub.publish("journal.entry", text="hello")
        beat = await wait_for(
            lambda: (b := _beat(sync_redis, fast_beat)) and b["committed_events"] == 1 and b
        )
        ttl_ms = int(sync_redis.pttl(key))
    assert beat["committed_by_type"] == {"journal.entry": 1}
    assert beat["consumer"] == fast_beat.consumer
    assert 0 < ttl_ms <= fast_beat.heartbeat_ttl_s * 1000
    assert sync_redis.exists(key) == 0


async def test_check_passes_while_a_worker_beats(
    fast_beat: Settings, sync_redis: redis.Redis
) -> None:
    async with running_worker(fast_beat):
        await wait_for(lambda: _beat(sync_redis, fast_beat), what="a heartbeat")
        result = await cli("check", *where_flags(fast_beat))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok: worker ")


async def test_check_fails_without_a_worker_and_says_why(settings: Settings) -> None:
    result = await cli("check", "--json", *where_flags(settings))
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert "no heartbeat" in report["reasons"][0]


async def test_check_fails_when_an_entry_is_pending_too_long(
    fast_beat: Settings, sync_redis: redis.Redis, tmp_path: Path, names: dict[str, str]
) -> None:
    s = make_settings(
        tmp_path / "p.db", fast_beat.redis_url, names, claim_idle_ms=600_000,
        heartbeat_interval_s=0.05,
    )  # fmt: skip
    sync_redis.xgroup_create(s.stream, s.group, id="0", mkstream=True)
    sync_redis.xadd(s.stream, {"event": "{}"}, id="1000-0")
    sync_redis.xreadgroup(s.group, "crashed-consumer", {s.stream: ">"})
    async with running_worker(s):
        await wait_for(lambda: _beat(sync_redis, s), what="a heartbeat")
        result = await cli("check", "--max-pending-age", "60", *where_flags(s))
    assert result.exit_code == 1
    assert "1 entries pending, the oldest (1000-0)" in result.stdout


async def test_check_fails_while_the_database_is_locked_and_passes_after(
    fast_beat: Settings, sync_redis: redis.Redis
) -> None:
    async with running_worker(fast_beat) as worker:
        blocker = sqlite3.connect(fast_beat.db, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            async with AsyncPublisher(
                fast_beat.redis_url, source="bot", stream=fast_beat.stream
            ) as pub:
                await pub.publish("journal.entry", text="blocked")
            await wait_for(
                lambda: (b := _beat(sync_redis, fast_beat)) and b["last_error"], what="error beat"
            )
            failing = await cli("check", *where_flags(fast_beat))
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await wait_for(lambda: worker.stats.committed == 1, what="the commit after unlocking")
        await wait_for(lambda: (b := _beat(sync_redis, fast_beat)) and not b["last_error"])
        passing = await cli("check", *where_flags(fast_beat))
    assert failing.exit_code == 1
    assert "database is locked" in failing.stdout
    assert passing.exit_code == 0, passing.output


# -- systemd notify -------------------------------------------------------------------


@pytest.fixture
def notify_socket() -> Iterator[socket.socket]:
    directory = tempfile.mkdtemp(prefix="ts-notify-")  # short: sun_path holds 108 bytes
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    yield sock
    sock.close()
    os.unlink(path)
    os.rmdir(directory)


def _receive_until(sock: socket.socket, wanted: str, seen: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not any(wanted in m.splitlines() for m in seen):
        left = deadline - time.monotonic()
        assert left > 0, f"no {wanted} within {timeout}s; got {seen}"
        sock.settimeout(left)
        seen.append(sock.recv(4096).decode())


def test_worker_speaks_sd_notify_ready_watchdog_status_stopping(
    notify_socket: socket.socket,
    worker_process: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.getsockname())
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    proc = worker_process()
    seen: list[str] = []
    _receive_until(notify_socket, "READY=1", seen, timeout=20)
    ready = next(m for m in seen if "READY=1" in m.splitlines())
    assert f"MAINPID={proc.process.pid}" in ready
    assert "STATUS=ready; committed 0 events" in ready
    _receive_until(notify_socket, "WATCHDOG=1", seen, timeout=5)
    proc.signal(signal.SIGTERM)
    _receive_until(notify_socket, "STOPPING=1", seen, timeout=10)
    assert proc.wait() == 0
    assert all(m.startswith(("READY=1", "STATUS=", "STOPPING=1")) for m in seen)


# -- forged and replayed heartbeats (issue 14) -------------------------------------------


def _plausible_beat(s: Settings) -> dict[str, Any]:
    return {"worker_id": "ghost@nowhere:1", "consumer": s.consumer, "committed_events": 0,
            "last_error": None, "last_error_age_s": None, "at": time.time()}  # fmt: skip


@pytest.mark.parametrize("how", ["unsigned", "another key"])
async def test_check_refuses_a_hand_set_heartbeat(
    settings: Settings, sync_redis: redis.Redis, how: str
) -> None:
    sync_redis.xgroup_create(settings.stream, settings.group, id="0", mkstream=True)
    key = heartbeat_key(settings.stream, settings.group)
    text = json.dumps(_plausible_beat(settings))
    if how == "another key":
        text = sign(b"not-the-worker-key-0123456789", heartbeat_header(key), text)
    sync_redis.set(key, text, ex=30)  # and no worker runs
    result = await cli("check", *where_flags(settings))
    assert result.exit_code == 1, result.output
    assert "is not signed with the channel key" in result.stdout
    assert "forged" in result.stdout


async def test_check_refuses_a_replayed_heartbeat_old_or_redated(
    fast_beat: Settings, sync_redis: redis.Redis
) -> None:
    key = heartbeat_key(fast_beat.stream, fast_beat.group)
    async with running_worker(fast_beat):
        genuine: bytes = await wait_for(lambda: sync_redis.get(key), what="a heartbeat")
        live = await cli("check", *where_flags(fast_beat))
    assert sync_redis.exists(key) == 0  # the clean stop removed it
    at = float(json.loads(re.sub(rb'^\{"sig":"[0-9a-f]{64}",', b"{", genuine))["at"])
    sync_redis.set(key, genuine, ex=30)  # the worker's own words, set again after its stop
    await wait_for(lambda: time.time() > at + 1.5, what="the beat to be 1.5 s old")
    replayed = await cli("check", "--max-beat-age", "1", *where_flags(fast_beat))
    redated = genuine.replace(f'"at": {at!r}'.encode(), f'"at": {time.time()!r}'.encode())
    assert redated != genuine
    sync_redis.set(key, redated, ex=30)
    forged_now = await cli("check", "--max-beat-age", "1", *where_flags(fast_beat))
    assert live.exit_code == 0, live.output
    assert replayed.exit_code == 1, replayed.output
    assert "s ago (bound 1 s)" in replayed.stdout, replayed.output
    assert forged_now.exit_code == 1, forged_now.output
    assert "not signed with the channel key" in forged_now.stdout


async def test_check_refuses_a_genuine_heartbeat_set_again_at_the_default_age_bound(
    fast_beat: Settings, sync_redis: redis.Redis
) -> None:
    """A copy of the worker's own beat is young enough for --max-beat-age's default, but
    no worker answers the signed ping that check sends (found by a user's replay)."""
    key = heartbeat_key(fast_beat.stream, fast_beat.group)
    async with running_worker(fast_beat):
        genuine: bytes = await wait_for(lambda: sync_redis.get(key), what="a heartbeat")
        live = await cli("check", *where_flags(fast_beat))
    sync_redis.set(key, genuine, ex=30)  # set again at once: as young as a live beat
    replayed = await cli("check", "--ping-timeout", "0.5", *where_flags(fast_beat))
    assert live.exit_code == 0, live.output
    assert replayed.exit_code == 1, replayed.output
    assert "no worker answered a signed ping within 0.5 s" in replayed.stdout
