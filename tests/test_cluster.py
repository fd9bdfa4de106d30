"""Redis Cluster: publishers, worker, request channel, status and the spool against a
local three-master cluster that this module starts from the suite's redis-server
(worker.embedded.EmbeddedCluster, free ports, its own folder; never port 6379)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from contracts import AsyncPublisher, Publisher
from contracts.client import Client, request_channel
from contracts.errors import PublishError, RedisUnreachableError
from contracts.events import build_event
from contracts.keys import hash_tag, legacy_stream_key, stream_key
from contracts.redisclient import async_client, publish, subscribers, sync_client
from contracts.redisurl import cluster_nodes, mask_url
from tests.helpers import (
    WorkerProcess,
    count,
    make_settings,
    query,
    running_worker,
    tradescribe,
    wait_for,
    where_flags,
    wire_events,
    worker_listening,
)
from worker.consume import attempts_key
from worker.embedded import EmbeddedCluster, find_redis_server
from worker.errors import ConfigError
from worker.http.ingest import append
from worker.lease import RedisLease
from worker.ops.health import heartbeat_key
from worker.settings import Settings, load_settings


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    started = EmbeddedCluster(
        find_redis_server("system"), directory=tmp_path_factory.mktemp("cluster")
    )
    started.start()
    yield started
    started.cleanup()


@pytest.fixture
def cluster_client(cluster: EmbeddedCluster) -> Iterator[redis.RedisCluster]:
    client = sync_client(cluster.url)
    assert isinstance(client, redis.RedisCluster)
    yield client
    client.close()


@pytest.fixture
def on_cluster(tmp_path: Path, cluster: EmbeddedCluster, names: dict[str, str]) -> Settings:
    return make_settings(tmp_path / "scribe.db", cluster.url, names)


@pytest.fixture
def cluster_worker(on_cluster: Settings, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(log_name: str = "worker.log") -> WorkerProcess:
        proc = WorkerProcess(on_cluster, tmp_path / log_name).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


TRADE = {"symbol": "BTCUSDT", "side": "buy", "quantity": "0.5", "entry_price": "100"}


def _pending(client: redis.RedisCluster, s: Settings) -> int:
    return int(client.xpending(s.stream, s.group)["pending"])


def _slot(client: redis.RedisCluster, key: str) -> int:
    return int(client.cluster_keyslot(key))


def test_cluster_has_three_masters_each_owning_slots(
    cluster: EmbeddedCluster, cluster_client: redis.RedisCluster
) -> None:
    masters = cluster_client.get_primaries()
    assert sorted(n.port for n in masters) == sorted(cluster.ports)
    assert 6379 not in cluster.ports
    assert cluster_client.cluster_info()["cluster_state"] == "ok"


async def test_sync_and_async_publishers_to_a_worker_process_sent_equals_stored(
    on_cluster: Settings,
    cluster_client: redis.RedisCluster,
    cluster_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    s = on_cluster
    proc = cluster_worker()
    sent = []
    with Publisher(s.redis_url, source="sync-bot", stream=s.stream, spool_dir=tmp_path) as pub:
        for i in range(300):
            sent.append(pub.publish("trade.opened", trade_id=f"S{i}", **TRADE))
    async with AsyncPublisher(
        s.redis_url, source="async-bot", stream=s.stream, spool_dir=tmp_path
    ) as apub:
        for i in range(300):
            sent.append(await apub.publish("trade.opened", trade_id=f"A{i}", **TRADE))
    cluster_client.xadd(s.stream, {"event": "not json"})  # dead-lettered, not lost
    await wait_for(lambda: count(s.db, "events") == 600, 60, "600 events stored")
    await wait_for(lambda: count(s.db, "dead_letters") == 1, 20, "one dead letter")
    await wait_for(lambda: _pending(cluster_client, s) == 0, 20, "nothing pending")
    stored = {r[0] for r in query(s.db, "SELECT event_id FROM events")}
    assert stored == set(sent)
    assert query(s.db, "SELECT count(DISTINCT source) FROM events")[0][0] == 2
    assert "not json" in str(query(s.db, "SELECT raw, reason FROM dead_letters"))
    assert "Traceback" not in proc.output()


async def test_status_ping_check_and_query_are_answered_over_the_cluster(
    on_cluster: Settings,
    cluster_client: redis.RedisCluster,
    cluster_worker: Callable[..., WorkerProcess],
) -> None:
    s = on_cluster
    cluster_worker()
    wire = wire_events("bot-a", 1)[0]
    cluster_client.xadd(s.stream, {"event": wire})
    await wait_for(lambda: count(s.db, "events") == 1, 30, "the event stored")
    await worker_listening(s, timeout=30)
    await wait_for(lambda: cluster_client.get(heartbeat_key(s.stream, s.group)), 30, "a beat")
    status = tradescribe("status", "--json", *where_flags(s), channel_key=True)
    ping = tradescribe("ping", *where_flags(s), channel_key=True)
    check = tradescribe("check", *where_flags(s), channel_key=True)
    assert status.returncode == 0, status.stderr
    answered = json.loads(status.stdout)
    assert answered["committed_events"] == 1
    assert answered["pending"] == 0
    assert answered["redis_error"] is None
    assert answered["redis_version"]
    assert ping.returncode == 0, ping.stderr
    assert check.returncode == 0, check.stdout + check.stderr
    with Client(s.redis_url, stream=s.stream, group=s.group) as client:
        answer = client.query("history", {"source": "bot-a"})
        assert client.wait_for_event(json.loads(wire)["id"], 5)
    assert answer["name"] == "history"


async def test_events_spooled_while_the_cluster_is_down_are_replayed_when_it_is_back(
    on_cluster: Settings,
    cluster: EmbeddedCluster,
    cluster_client: redis.RedisCluster,
    cluster_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    s = on_cluster
    proc = cluster_worker()
    spool = tmp_path / "spool"
    with Publisher(s.redis_url, source="spool-bot", stream=s.stream, spool_dir=spool) as pub:
        sent = [pub.publish("trade.opened", trade_id=f"B{i}", **TRADE) for i in range(50)]
        await wait_for(lambda: count(s.db, "events") == 50, 60, "50 stored before the outage")
        cluster.stop()
        try:
            during = [pub.publish("trade.opened", trade_id=f"D{i}", **TRADE) for i in range(200)]
            status = pub.spool_status()
            assert status is not None
            assert status.events == 200  # every event of the outage waits on disk
        finally:
            cluster.start()
        assert pub.flush(timeout_s=60), pub.spool_status()
    sent += during
    await wait_for(lambda: count(s.db, "events") == 250, 90, "all 250 stored")
    fresh = sync_client(s.redis_url)
    try:
        await wait_for(lambda: _pending(fresh, s) == 0, 30, "nothing pending")  # type: ignore[arg-type]
    finally:
        fresh.close()
    assert {r[0] for r in query(s.db, "SELECT event_id FROM events")} == set(sent)
    assert "Traceback" not in proc.output()


async def test_a_publisher_starts_and_spools_while_no_cluster_node_answers(
    tmp_path: Path,
) -> None:
    dead = "redis+cluster://127.0.0.1:1,127.0.0.1:2"
    with Publisher(dead, source="early-bot", spool_dir=tmp_path, timeout_s=0.2) as pub:
        event_id = pub.publish("trade.opened", trade_id="S1", **TRADE)
        status = pub.spool_status()
    assert event_id
    assert status is not None
    assert status.events == 1
    with pytest.raises(RedisUnreachableError, match="cannot reach Redis at redis\\+cluster://"):
        Client(dead, connect_timeout_s=0.2)


async def test_a_request_reaches_the_worker_whichever_node_holds_its_channel(
    cluster: EmbeddedCluster, cluster_client: redis.RedisCluster
) -> None:
    """PUBLISH counts the receiving node's subscribers only: the client must publish
    where the worker subscribes, the node of the channel's slot, on every shard."""
    by_node: dict[int, str] = {}
    while len(by_node) < len(cluster.ports):
        channel = request_channel(f"s-{uuid.uuid4().hex[:8]}", "g")
        by_node.setdefault(cluster_client.get_node_from_key(channel).port, channel)
    listener = async_client(cluster.url)
    pubsubs = [listener.pubsub() for _ in by_node]  # one channel each, as the worker's
    try:
        for pubsub, channel in zip(pubsubs, by_node.values(), strict=True):
            await pubsub.subscribe(channel)
        heard = [publish(cluster_client, channel, "hello") for channel in by_node.values()]
        counted = [subscribers(cluster_client, channel) for channel in by_node.values()]
    finally:
        for pubsub in pubsubs:
            await pubsub.aclose()
        await listener.aclose()
    assert heard == [1, 1, 1]
    assert counted == [1, 1, 1]


async def test_the_http_ingest_transaction_runs_on_the_streams_shard(
    cluster: EmbeddedCluster, cluster_client: redis.RedisCluster, names: dict[str, str]
) -> None:
    events = [
        build_event("trade.opened", {"trade_id": f"H{i}", **TRADE}, source="web") for i in range(20)
    ]
    client = async_client(cluster.url)
    try:
        ids = await append(client, names["stream"], events)  # MULTI, 20 XADDs, EXEC
    finally:
        await client.aclose()
    assert ids == [e.id for e in events]
    assert cluster_client.xlen(names["stream"]) == 20


@pytest.mark.parametrize("stream", ["tradescribe:events", "tradescribe:events:{3}", "a:b"])
def test_the_keys_of_one_stream_land_in_its_slot(
    cluster_client: redis.RedisCluster, stream: str
) -> None:
    group = "tradescribe"
    keys = [
        stream_key("lease", stream, group),
        attempts_key(stream, group),
        heartbeat_key(stream, group),
        RedisLease(cluster_client, stream, group, {}, 1000).key,  # type: ignore[arg-type]
    ]
    assert {_slot(cluster_client, k) for k in keys} == {_slot(cluster_client, stream)}
    assert hash_tag(keys[0]) in (hash_tag(stream), stream)


async def test_a_running_worker_keeps_its_keys_on_the_streams_shard(
    on_cluster: Settings, cluster_client: redis.RedisCluster
) -> None:
    s = on_cluster
    async with running_worker(s):
        lease = stream_key("lease", s.stream, s.group)
        beat = heartbeat_key(s.stream, s.group)
        await wait_for(lambda: cluster_client.exists(lease, beat) == 2, 20, "lease and beat")
        node = cluster_client.get_node_from_key(s.stream)
        assert cluster_client.get_node_from_key(lease) == node
        assert cluster_client.get_node_from_key(beat) == node


async def test_a_single_redis_keeps_working_and_its_old_attempts_hash_is_carried_over(
    settings: Settings, sync_redis: redis.Redis
) -> None:
    old = legacy_stream_key("attempts", settings.stream, settings.group)
    sync_redis.hset(old, "1-1", 2)
    sync_redis.xadd(settings.stream, {"event": wire_events("bot-a", 1)[0]})
    async with running_worker(settings):
        await wait_for(lambda: count(settings.db, "events") == 1, 20, "the event stored")
    assert not sync_redis.exists(old)
    assert sync_redis.hget(attempts_key(settings.stream, settings.group), "1-1") == b"2"
    assert request_channel(settings.stream, settings.group).endswith(settings.group)


async def test_a_cluster_with_a_password_from_a_file_is_used_and_a_wrong_one_refused(
    tmp_path: Path, names: dict[str, str]
) -> None:
    with EmbeddedCluster(find_redis_server("system"), directory=tmp_path / "c") as locked:
        for port in locked.ports:
            admin = redis.Redis(port=port)
            admin.config_set("requirepass", "cluster-secret")
            admin.close()
        (tmp_path / "pw").write_text("cluster-secret\n")
        s = make_settings(
            tmp_path / "scribe.db", locked.url, names, redis_password_file=tmp_path / "pw"
        )
        assert "cluster-secret" not in json.dumps(s.public())
        with Publisher(s.redis_url, source="pw-bot", stream=s.stream, spool_dir=tmp_path) as pub:
            sent = pub.publish("trade.opened", trade_id="P1", **TRADE)
        async with running_worker(s):
            await wait_for(lambda: count(s.db, "events") == 1, 30, "the event stored")
        wrong = locked.url.replace("redis+cluster://", "redis+cluster://:nope@")
        with (
            Publisher(wrong, source="bad-bot", spool_dir=tmp_path / "bad") as bad,
            pytest.raises(PublishError, match="invalid username-password pair"),
        ):
            bad.publish("trade.opened", trade_id="P2", **TRADE)
    assert query(s.db, "SELECT event_id FROM events") == [(sent,)]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://127.0.0.1:7000/3", "database 0 only"),
        ("redis+cluster://127.0.0.1", "is not host:port"),
        ("redis+cluster://h:7000,h:x", "'h:x' is not host:port"),
        ("memcached://h:1", "redis+cluster://"),
    ],
)
def test_a_bad_cluster_url_is_one_clear_line(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        load_settings(redis_url=url)
    assert "\n" not in str(err.value)


def test_a_cluster_url_keeps_its_password_out_of_sight(tmp_path: Path) -> None:
    url = "redis+cluster://bot:s3cret@10.0.0.1:7000,10.0.0.2:7000"
    assert mask_url(url) == "redis+cluster://bot:***@10.0.0.1:7000,10.0.0.2:7000"
    assert cluster_nodes(url) == ("redis://bot:s3cret@10.0.0.1:7000", [("10.0.0.2", 7000)])
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    s = load_settings(redis_url="redis+cluster://bot@h1:7000,h2:7001", redis_password_file=secret)
    assert s.redis_url == "redis+cluster://bot:from-file@h1:7000,h2:7001"
    assert s.public()["redis_url"] == "redis+cluster://bot:***@h1:7000,h2:7001"
    assert cluster_nodes(s.redis_url)[0] == "redis://bot:from-file@h1:7000"
