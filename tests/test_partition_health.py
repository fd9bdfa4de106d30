"""Several workers of partitions, each with its own heartbeat: `tradescribe check` names a
dead worker and the partitions it leaves, `status` asks every worker, and a clean stop
removes only that worker's beat (real redis-server, real PostgreSQL, real worker
processes; tests/pgfix.py starts PostgreSQL)."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from contracts import Publisher
from contracts.channelauth import heartbeat_header, sign
from contracts.keys import stream_key
from contracts.partitions import partition_of, partition_stream
from tests.helpers import make_settings, run_cli, wait_for, where_flags
from tests.pgfix import create_database, postgres_admin_url
from tests.test_postgres import PgWorkerProcess, wait_count
from tests.test_security import acl_user
from worker.ops.health import heartbeat_key, worker_heartbeat_key
from worker.settings import Settings

__all__ = ["acl_user", "postgres_admin_url"]
pytestmark = pytest.mark.timeout(180)

K = 4


# -- the key: its own per consumer, in the stream's slot ----------------------------------

names_text = st.text(st.characters(blacklist_characters="{}", codec="utf-8"), min_size=1,
                     max_size=30)  # fmt: skip


@given(stream=names_text, group=names_text, consumer=st.text(min_size=1, max_size=30))
def test_a_workers_own_heartbeat_key_is_in_the_streams_slot(
    stream: str, group: str, consumer: str
) -> None:
    # any consumer name, braces too: the stream's tag comes first, so it decides the slot
    slot = key_slot(stream.encode())
    assert key_slot(heartbeat_key(stream, group, consumer).encode()) == slot
    assert key_slot(heartbeat_key(stream, group).encode()) == slot
    tagged = partition_stream(stream, 3)  # a stream with a tag of its own keeps it
    assert key_slot(heartbeat_key(tagged, group, consumer).encode()) == key_slot(b"3")


def test_single_worker_keeps_the_shared_key_a_worker_of_partitions_has_its_own(
    settings: Settings,
) -> None:
    assert worker_heartbeat_key(settings) == heartbeat_key(settings.stream, settings.group)
    mine = settings.model_copy(update={"partitions": K, "consumer": "w7"})
    assert worker_heartbeat_key(mine) == heartbeat_key(settings.stream, settings.group) + ":w7"


# -- check without live workers (Redis only) ------------------------------------------------


def test_check_with_partitions_and_no_worker_names_every_partition_and_the_fix(
    settings: Settings,
) -> None:
    result = run_cli("check", "--partitions", str(K), "--ping-timeout", "0.3",
                     *where_flags(settings))  # fmt: skip
    assert result.code == 1, result.out + result.err
    assert result.out.count("\n") == 1  # one line
    assert result.out.startswith(
        f"unhealthy: no worker holds partitions {{0}} {{1}} {{2}} {{3}} of {settings.stream}: "
        f"start a worker (tradescribe worker --partitions {K})"
    ), result.out


def test_check_refuses_a_hand_set_lease_and_heartbeat_of_a_ghost_worker(
    settings: Settings, sync_redis: redis.Redis
) -> None:
    s = settings
    lease = stream_key("lease", partition_stream(s.stream, 0), s.group)
    sync_redis.set(lease, json.dumps({"consumer": "ghost", "host": "x", "pid": 1}), ex=30)
    beat = heartbeat_key(s.stream, s.group, "ghost")
    body = json.dumps({"consumer": "ghost", "at": time.time(), "last_error": None})
    sync_redis.set(beat, sign(b"not-the-worker-key-0123456789", heartbeat_header(beat), body),
                   ex=30)  # fmt: skip
    result = run_cli("check", "--partitions", str(K), "--ping-timeout", "0.3", "--json",
                     *where_flags(s))  # fmt: skip
    assert result.code == 1, result.out
    report = result.json()
    assert report["reasons"][0].startswith(
        f"worker ghost is dead or stuck (its heartbeat at {beat} is not signed with the "
        f"channel key (not believed)) and holds partition {{0}} of {s.stream}"
    ), report
    assert [p["holder"] for p in report["partitions"]] == ["ghost", None, None, None]
    assert report["workers"][0]["consumer"] == "ghost"
    assert report["workers"][0]["alive"] is False


def test_the_dashboards_pipeline_health_judges_partitions_too(settings: Settings) -> None:
    from tests.conftest import TEST_CHANNEL_KEY
    from worker.http.reads import pipeline

    s = settings
    found = pipeline(s.redis_url, s.stream, s.group, 30.0, TEST_CHANNEL_KEY.encode(), K)
    assert found["ok"] is False
    assert found["reasons"][0].startswith("no worker holds partitions {0} {1} {2} {3}")
    assert len(found["partitions"]) == K


def test_the_ops_acl_recipe_runs_check_with_partitions(acl_user: Any, settings: Settings) -> None:
    """deploy/redis-acl.conf's ops user reads the leases and XPENDING of every partition:
    a verdict (no worker holds them), not Redis's refusal."""
    s = settings
    where = ["--redis-url", acl_user("ops"), "--stream", s.stream, "--group", s.group]
    checked = run_cli("check", "--partitions", str(K), "--ping-timeout", "0.3", *where)
    assert checked.code == 1  # no worker runs: a verdict, not a refusal
    assert "no permissions" not in checked.out, checked.out
    assert checked.out.startswith("unhealthy: no worker holds partitions {0} {1} {2} {3}"), (
        checked.out
    )


# -- three workers on PostgreSQL -------------------------------------------------------------


@pytest.fixture
async def pg_url(postgres_admin_url: str) -> str:
    return await create_database(postgres_admin_url)


def worker_settings(url: str, redis_url: str, names: dict[str, str], consumer: str) -> Settings:
    # a lease of 6 s: a SIGKILLed worker's partitions wait that long for the others
    return make_settings(url, redis_url, {**names, "consumer": consumer},  # type: ignore[arg-type]
                         partitions=K, lease_ttl_ms=6000, claim_idle_ms=20_000,
                         heartbeat_interval_s=0.3)  # fmt: skip


def start(settings: list[Settings], tmp_path: Path) -> list[PgWorkerProcess]:
    procs = []
    for s in settings:
        proc = PgWorkerProcess(s, tmp_path / f"{s.consumer}.log")
        base = proc.env

        def env(base: Any = base, s: Settings = s) -> dict[str, str]:
            return {**base(), "TRADESCRIBE_PARTITIONS": str(s.partitions),
                    "TRADESCRIBE_HEARTBEAT_INTERVAL_S": str(s.heartbeat_interval_s),
                    "TRADESCRIBE_LOG_LEVEL": "INFO"}  # fmt: skip

        proc.env = env  # type: ignore[method-assign]
        procs.append(proc.start())
    return procs


def holders(names: dict[str, str], client: redis.Redis) -> list[str | None]:
    """Each partition's lease holder."""
    out = []
    for p in range(K):
        raw = client.get(stream_key("lease", partition_stream(names["stream"], p), names["group"]))
        out.append(None if raw is None else json.loads(raw)["consumer"])
    return out


def settle(names: dict[str, str], client: redis.Redis, shares: dict[str, int]) -> None:
    """Wait until the leases are held in exactly these ``shares`` and stay so for longer
    than a tick (workers starting together pass through other shares first)."""
    tick = 6000 / 3000 + 0.5

    def held_so() -> bool:
        return Counter(holders(names, client)) == Counter(shares)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        anyio.run(wait_for, held_so, 60, f"the shares {shares}")
        time.sleep(tick)
        if held_so():
            return
    raise AssertionError(f"the shares never settled at {shares}: {holders(names, client)}")


def check(s: Settings, *extra: str) -> Any:
    return run_cli("check", "--partitions", str(K), "--ping-timeout", "1", *extra,
                   *where_flags(s))  # fmt: skip


def beat(client: redis.Redis, s: Settings, consumer: str) -> dict[str, Any] | None:
    raw = client.get(heartbeat_key(s.stream, s.group, consumer))
    return None if raw is None else json.loads(re.sub(rb'^\{"sig":"[0-9a-f]{64}",', b"{", raw))


def test_check_names_a_sigkilled_worker_and_its_partitions_until_the_others_hold_them(
    pg_url: str, redis_url: str, names: dict[str, str], sync_redis: redis.Redis, tmp_path: Path
) -> None:
    settings = [worker_settings(pg_url, redis_url, names, f"w{i}") for i in range(3)]
    s = settings[0]
    procs = start(settings, tmp_path)
    try:
        settle(names, sync_redis, {"w0": 2, "w1": 1, "w2": 1})  # fair shares of 4 among 3
        anyio.run(wait_for, lambda: all(beat(sync_redis, s, f"w{i}") for i in range(3)), 10)
        healthy = check(s, "--json")
        assert healthy.code == 0, healthy.out
        report = healthy.json()
        assert [(w["consumer"], w["alive"], w["answered_ping"]) for w in report["workers"]] == [
            ("w0", True, True), ("w1", True, True), ("w2", True, True)]  # fmt: skip
        assert {p["holder"] for p in report["partitions"]} == {"w0", "w1", "w2"}
        assert all(p["ok"] for p in report["partitions"])
        line = check(s)
        assert line.code == 0
        assert line.out.startswith(f"ok: 3 workers hold all 4 partitions of {s.stream} (w0 {{"), (
            line.out
        )
        print("before the kill:", line.out.strip())

        w1_held = [p for p, c in enumerate(holders(names, sync_redis)) if c == "w1"]
        procs[1].kill()  # SIGKILL: its heartbeat key stays, young, until its TTL
        dead = check(s)
        dead_json = check(s, "--json")
        print("after SIGKILL of w1:", dead.out.strip())
        assert beat(sync_redis, s, "w1") is not None  # so the ping is what tells
        assert dead.code == 1, dead.out
        assert dead.out.count("\n") == 1
        braces = " ".join(f"{{{p}}}" for p in w1_held)
        word = "partition" if len(w1_held) == 1 else "partitions"
        assert dead.out.startswith(
            f"unhealthy: worker w1 is dead or stuck (no answer to a signed ping) and holds "
            f"{word} {braces} of {s.stream}: restart it, or the live workers take its "
            "partitions once its lease expires (lease_ttl_ms)"
        ), dead.out
        report = dead_json.json()
        assert dead_json.code == 1
        w1 = next(w for w in report["workers"] if w["consumer"] == "w1")
        assert (w1["alive"], w1["answered_ping"], w1["partitions"]) == (False, False, w1_held)
        assert [p["partition"] for p in report["partitions"] if not p["ok"]] == w1_held

        # the others take w1's partitions once its membership and lease expire: healthy
        settle(names, sync_redis, {"w0": 2, "w2": 2})
        moved = check(s, "--json")
        assert moved.code == 0, moved.out
        report = moved.json()
        assert [w["consumer"] for w in report["workers"]] == ["w0", "w2"]
        assert {report["partitions"][p]["holder"] for p in w1_held} <= {"w0", "w2"}
        again = check(s)
        print("once the others hold its partitions:", again.out.strip())
        assert again.out.startswith(f"ok: 2 workers hold all 4 partitions of {s.stream}")
        short = check(s, "--min-workers", "3")
        print("with --min-workers 3:", short.out.strip())
        assert short.code == 1
        assert short.out == (
            "unhealthy: 2 live workers (w0, w2), fewer than --min-workers 3: one stopped or "
            "died; start it again\n"
        )
    finally:
        for proc in procs:
            proc.stop()


def test_a_clean_stop_removes_only_its_own_heartbeat_and_status_asks_each_worker(
    pg_url: str, redis_url: str, names: dict[str, str], sync_redis: redis.Redis, tmp_path: Path
) -> None:
    settings = [worker_settings(pg_url, redis_url, names, f"w{i}") for i in range(3)]
    s = settings[0]
    procs = start(settings, tmp_path)
    try:
        settle(names, sync_redis, {"w0": 2, "w1": 1, "w2": 1})

        def beats_match_leases() -> bool:
            now = holders(names, sync_redis)
            for c in ("w0", "w1", "w2"):
                b = beat(sync_redis, s, c)
                if b is None or b["partitions"] != [p for p, h in enumerate(now) if h == c]:
                    return False
            return True

        anyio.run(wait_for, beats_match_leases, 10)  # each beat lists what it holds
        assert sync_redis.exists(heartbeat_key(s.stream, s.group)) == 0  # no shared key

        status = run_cli("status", "--partitions", str(K), "--json", *where_flags(s))
        assert status.code == 0, status.err
        workers = status.json()["workers"]
        assert [w["consumer"] for w in workers] == ["w0", "w1", "w2"]
        assert sorted(p for w in workers for p in w["partitions"]) == list(range(K))
        assert all(w["pending"] == 0 and w["redis_error"] is None for w in workers), workers
        one = run_cli("status", "--consumer", "w1", "--json", *where_flags(s))
        assert one.code == 0, one.err
        assert one.json()["consumer"] == "w1"
        table = run_cli("status", "--partitions", str(K), *where_flags(s))
        assert table.code == 0
        assert all(f"tradescribe worker w{i}@" in table.out for i in range(3)), table.out
        assert table.out.count("partitions held") == 3
        nobody = run_cli("status", "--consumer", "w9", *where_flags(s))
        assert nobody.code == 2
        assert "no worker named w9 answered within 2 s (these did: w0, w1, w2)" in nobody.err

        w0_before = beat(sync_redis, s, "w0")
        assert w0_before is not None
        procs[2].stop()  # SIGTERM: a clean stop
        assert procs[2].wait() == 0
        assert sync_redis.exists(heartbeat_key(s.stream, s.group, "w2")) == 0
        for c in ("w0", "w1"):
            assert sync_redis.exists(heartbeat_key(s.stream, s.group, c)) == 1
        anyio.run(wait_for, lambda: (b := beat(sync_redis, s, "w0")) and b["at"] > w0_before["at"])
        # it handed its partitions over at once (leases released): healthy with two
        settle(names, sync_redis, {"w0": 2, "w1": 2})
        after = check(s)
        assert after.code == 0, after.out
        assert after.out.startswith(f"ok: 2 workers hold all 4 partitions of {s.stream}")
    finally:
        for proc in procs:
            proc.stop()


def test_partitioned_workers_bots_and_check_run_as_the_acl_recipes_users(
    pg_url: str,
    redis_url: str,
    names: dict[str, str],
    sync_redis: redis.Redis,
    acl_user: Any,
    tmp_path: Path,
) -> None:
    """deploy/redis-acl.conf as written, with --partitions: two workers as its worker
    user, a bot as its bot user publishing to every partition, `check` as its ops user."""
    worker_url, bot_url, ops_url = acl_user("worker"), acl_user("bot"), acl_user("ops")
    settings = [worker_settings(pg_url, worker_url, names, f"w{i}") for i in range(2)]
    procs = start(settings, tmp_path)
    try:
        settle(names, sync_redis, {"w0": 2, "w1": 2})
        sources = [f"bot-{n}" for n in range(12)]
        for source in sources:
            with Publisher(bot_url, source=source, stream=names["stream"], partitions=K,
                           spool=False) as pub:  # fmt: skip
                for n in range(5):
                    pub.publish("trade.opened", trade_id=f"T{n}", symbol="BTCUSDT",
                                side="buy", quantity="1", entry_price="100")  # fmt: skip
        used = {partition_of(source, K) for source in sources}
        assert len(used) > 1  # the bot user wrote to several partition streams
        anyio.run(wait_count, pg_url, "events", 60, 60)
        anyio.run(wait_for, lambda: all(beat(sync_redis, settings[0], c) for c in ("w0", "w1")))
        where = ["--redis-url", ops_url, "--stream", names["stream"], "--group", names["group"]]
        checked = run_cli("check", "--partitions", str(K), "--ping-timeout", "1", *where)
        logs = procs[0].output() + procs[1].output()
        assert "NOPERM" not in logs, logs[-3000:]
        assert "no permissions" not in logs, logs[-3000:]
        assert checked.code == 0, checked.out
        assert checked.out.startswith(f"ok: 2 workers hold all 4 partitions of {names['stream']}")
    finally:
        for proc in procs:
            proc.stop()
