"""Stream partitions: publishers route by source, several workers share the partitions
on PostgreSQL, and faults (a worker SIGKILLed, PostgreSQL restarted) lose nothing,
store nothing twice and keep each source's order (tests/pgfix.py starts PostgreSQL)."""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio as aredis

from contracts import Publisher, build_event, to_wire
from contracts.keys import stream_key
from contracts.partitions import partition_of, partition_stream, stream_for, stream_for_wire
from tests.helpers import make_settings, run_cli, wait_for
from tests.pgfix import create_database, postgres_admin_url
from tests.test_postgres import (
    PgWorkerProcess,
    pg_count,
    pg_fetch,
    wait_at_least,
    wait_count,
)
from worker.embedded import EmbeddedRedis
from worker.errors import AlreadyRunningError, LeaseLostError
from worker.lease import RedisLease, worker_identity
from worker.partitions import _lost_lease, _renewing, fair_share
from worker.settings import Settings
from worker.store.pgmaint import rebuild_check

__all__ = ["postgres_admin_url"]
pytestmark = pytest.mark.timeout(120)

K = 4
OPENED = {"trade_id": "T1", "symbol": "BTCUSDT", "side": "buy", "quantity": "1",
          "entry_price": "100"}  # fmt: skip


def test_a_source_always_goes_to_the_same_partition_with_a_stable_hash() -> None:
    # CRC-32, not Python's salted hash(): the same in every process and version
    assert partition_of("bot-a", 4) == 267583432 % 4 == partition_of("bot-a", 4)
    assert partition_stream("tradescribe:events", 3) == "tradescribe:events:{3}"
    assert stream_for("s", "bot-a", 1) == "s"  # one partition: the stream as before
    assert stream_for("s", "bot-a", 4) == f"s:{{{partition_of('bot-a', 4)}}}"
    wire = to_wire(build_event("trade.opened", OPENED, source="bot-a"))
    assert stream_for_wire("s", wire, 4) == stream_for("s", "bot-a", 4)
    assert stream_for_wire("s", b"not json", 4) == "s:{0}"
    spread = {partition_of(f"bot-{i}", 8) for i in range(64)}
    assert spread == set(range(8))


@pytest.mark.parametrize("k", [1, 4, 5, 16])
def test_fair_shares_add_up_to_every_partition_and_differ_by_one_at_most(k: int) -> None:
    for n in range(1, 7):
        members = sorted(f"w{i}" for i in range(n))
        shares = [fair_share(k, members, m) for m in members]
        assert sum(shares) == k
        assert max(shares) - min(shares) <= 1


def test_publisher_routes_each_event_to_its_sources_partition(
    sync_redis: redis.Redis, redis_url: str, names: dict[str, str], tmp_path: Path
) -> None:
    stream = names["stream"]
    assert stream_for(stream, "bot-a", K) != stream_for(stream, "bot-b", K)
    for source in ("bot-a", "bot-b"):
        with Publisher(redis_url, source=source, stream=stream, partitions=K,
                       spool_dir=tmp_path) as pub:  # fmt: skip
            for i in range(3):
                pub.publish("trade.opened", {**OPENED, "trade_id": f"T{i}"})
    for source in ("bot-a", "bot-b"):
        entries = sync_redis.xrange(stream_for(stream, source, K))
        assert [e[1][b"event"].count(source.encode()) for e in entries] == [1, 1, 1]
    assert sync_redis.exists(stream) == 0  # nothing on the unpartitioned stream
    total = sum(sync_redis.xlen(partition_stream(stream, p)) for p in range(K))
    assert total == 6


def test_events_spooled_while_redis_was_down_drain_to_their_sources_partition(
    own_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    own_redis.stop()
    with Publisher(own_redis.url, source="bot-c", stream="s", partitions=K,
                   spool_dir=tmp_path / "spool") as pub:  # fmt: skip
        for n in range(5):
            pub.publish("trade.opened", {**OPENED, "trade_id": f"T{n}"})
        assert pub.spool_status().events == 5  # type: ignore[union-attr]
        own_redis.start()
        pub.publish("trade.opened", {**OPENED, "trade_id": "T5"})
        assert pub.flush(timeout_s=10)
    client = redis.Redis.from_url(own_redis.url)
    try:
        entries = client.xrange(stream_for("s", "bot-c", K))
        assert client.exists("s") == 0
    finally:
        client.close()
    assert [json.loads(f[b"event"])["data"]["trade_id"] for _, f in entries] == [
        f"T{n}" for n in range(6)
    ]


def test_partitions_on_sqlite_are_refused_in_one_line(tmp_path: Path, redis_url: str) -> None:
    result = run_cli("worker", "--db", str(tmp_path / "x.db"), "--redis-url", redis_url,
                     "--partitions", "4")  # fmt: skip
    assert result.code == 6  # EXIT_NOTCONFIGURED: systemd does not restart it
    assert "partitions 4 needs PostgreSQL" in result.err, result.err
    assert "Traceback" not in result.err


# -- several workers on PostgreSQL ---------------------------------------------------------


@pytest.fixture
async def pg_url(postgres_admin_url: str) -> str:
    return await create_database(postgres_admin_url)


def partitioned(url: str, redis_url: str, names: dict[str, str], consumer: str) -> Settings:
    return make_settings(url, redis_url, {**names, "consumer": consumer},  # type: ignore[arg-type]
                         partitions=K, batch_max=300, lease_ttl_ms=1500,
                         claim_idle_ms=3000)  # fmt: skip


def publish_sources(client: redis.Redis, stream: str, sources: int, per: int) -> list[str]:
    """``per`` events of each of ``sources`` bots, interleaved, each to its partition;
    trade ids count up per source, so stored order can be checked against them."""
    ids = []
    pipe = client.pipeline(transaction=False)
    for i in range(per):
        for b in range(sources):
            source = f"bot-{b}"
            event = build_event("trade.opened", {"trade_id": f"T{i:06d}", "symbol": "BTCUSDT",
                                "side": "buy", "quantity": "1", "entry_price": "100"},
                                source=source)  # fmt: skip
            ids.append(event.id)
            pipe.xadd(stream_for(stream, source, K), {"event": to_wire(event)})
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()
    return ids


def partition_pending(client: redis.Redis, names: dict[str, str]) -> int:
    stream, group = names["stream"], names["group"]
    total = 0
    for p in range(K):
        try:
            total += int(client.xpending(partition_stream(stream, p), group)["pending"])
        except redis.ResponseError:  # no group yet
            return -1
    return total


async def check_invariants(url: str, sent: list[str], sources: int, per: int) -> None:
    """sent = stored, nothing twice, each source's trades stored in the order sent,
    ``rebuild --check`` EQUAL."""
    rows = await pg_fetch(url, "SELECT event_id, source, body FROM events ORDER BY seq")
    assert len(rows) == len(sent)
    assert {r[0] for r in rows} == set(sent)  # event_id is unique: nothing twice
    order: dict[str, list[str]] = {}
    for _, source, body in rows:
        order.setdefault(source, []).append(body.split('"trade_id":"', 1)[1][:7])
    assert len(order) == sources
    for source, trades in order.items():
        assert trades == sorted(trades), f"{source} stored out of order"
        assert len(trades) == per
    assert await pg_count(url, "trades") == len(sent)
    assert await pg_count(url, "dead_letters") == 0
    check = await rebuild_check(url)
    assert check["equal"], check["tables"]


def start_workers(settings: list[Settings], tmp_path: Path) -> list[PgWorkerProcess]:
    procs = []
    for s in settings:
        proc = PgWorkerProcess(s, tmp_path / f"{s.consumer}.log")
        proc.env = _with_partitions(proc.env, s)  # type: ignore[method-assign]
        procs.append(proc.start())
    return procs


def _with_partitions(env: Any, s: Settings) -> Any:
    def with_them() -> dict[str, str]:
        out = dict(env())
        out["TRADESCRIBE_PARTITIONS"] = str(s.partitions)
        out["TRADESCRIBE_LOG_LEVEL"] = "INFO"
        return out

    return with_them


def holders(names: dict[str, str], client: redis.Redis) -> set[str]:
    """The consumers holding the partitions' leases; empty unless every partition has one."""
    found = set()
    for p in range(K):
        raw = client.get(stream_key("lease", partition_stream(names["stream"], p), names["group"]))
        if raw is None:
            return set()
        found.add(json.loads(raw)["consumer"])
    return found


def test_three_workers_share_partitions_and_one_sigkilled_is_taken_over(
    pg_url: str, redis_url: str, names: dict[str, str], sync_redis: redis.Redis, tmp_path: Path
) -> None:
    settings = [partitioned(pg_url, redis_url, names, f"w{i}") for i in range(3)]
    procs = start_workers(settings, tmp_path)
    try:
        # all three hold partitions (fair shares 2, 1, 1) before anything is sent
        anyio.run(wait_for, lambda: holders(names, sync_redis) == {"w0", "w1", "w2"}, 30)
        sent = publish_sources(sync_redis, names["stream"], sources=12, per=1500)
        anyio.run(wait_at_least_async, pg_url, 1500)
        procs[1].kill()  # w1 holds a partition or two, with a batch in hand
        at_kill = anyio.run(pg_count, pg_url, "events")
        anyio.run(wait_count, pg_url, "events", len(sent), 60)
        anyio.run(wait_for, lambda: partition_pending(sync_redis, names) == 0, 20)
        print(f"sent {len(sent)}, stored {at_kill} at SIGKILL of w1, "
              f"{anyio.run(pg_count, pg_url, 'events')} after")  # fmt: skip
        assert at_kill < len(sent), "the kill came too late to prove anything"
        # w1's partitions taken over (a partition it had drained before it died is taken
        # when its lease runs out, maybe after the last event was stored)
        anyio.run(wait_for, lambda: holders(names, sync_redis) == {"w0", "w2"}, 10, "w0, w2")
        assert "took over" in procs[0].output() + procs[2].output()  # and its pending
        survivors = procs[0].output() + procs[2].output()
        assert "Traceback" not in survivors, survivors[-3000:]
        anyio.run(check_invariants, pg_url, sent, 12, 1500)
    finally:
        for proc in procs:
            proc.stop()


async def wait_at_least_async(url: str, n: int) -> None:
    await wait_at_least(url, "events", n, 60)


# -- PostgreSQL restarted mid-ingest -------------------------------------------------------


class OwnPostgres:
    """A PostgreSQL of this test alone (from pgserver), to stop and start again."""

    def __init__(self, folder: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver  # type: ignore[import-untyped,unused-ignore]
            from pgserver._commands import pg_ctl  # type: ignore[import-untyped,unused-ignore]

        folder.chmod(0o755)
        self._pg_ctl = pg_ctl
        self.server = pgserver.get_server(folder / "pg", cleanup_mode="delete")
        self.url = str(self.server.get_uri())

    def restart(self, down_s: float) -> None:
        s = self.server
        self._pg_ctl(["-w", "-m", "fast", "stop"], pgdata=s.pgdata, user=s.system_user)
        threading.Event().wait(down_s)
        s.ensure_postgres_running()

    def close(self) -> None:
        self.server.cleanup()


@pytest.fixture
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnPostgres]:
    folder = Path(f"/tmp/ts-pg-{uuid.uuid4().hex[:8]}")  # short: the socket path is limited
    folder.mkdir()
    try:
        pg = OwnPostgres(folder)
    except Exception as exc:  # any reason it cannot start
        pytest.skip(f"no PostgreSQL of its own could be started: {exc}")
    try:
        yield pg
    finally:
        pg.close()
        subprocess.run(["rm", "-rf", str(folder)], check=False)


def test_postgres_restarted_mid_ingest_loses_nothing_with_two_workers(
    own_postgres: OwnPostgres, redis_url: str, names: dict[str, str],
    sync_redis: redis.Redis, tmp_path: Path,
) -> None:  # fmt: skip
    url = anyio.run(create_database, own_postgres.url)
    settings = [partitioned(url, redis_url, names, f"w{i}") for i in range(2)]
    procs = start_workers(settings, tmp_path)
    try:
        anyio.run(wait_for, lambda: holders(names, sync_redis) == {"w0", "w1"}, 30)
        sent = publish_sources(sync_redis, names["stream"], sources=8, per=1500)
        anyio.run(wait_at_least_async, url, 2000)
        own_postgres.restart(down_s=1.0)
        at_restart = anyio.run(pg_count, url, "events")
        anyio.run(wait_count, url, "events", len(sent), 60)
        anyio.run(wait_for, lambda: partition_pending(sync_redis, names) == 0, 20)
        print(f"sent {len(sent)}, {at_restart} stored when PostgreSQL came back, all after")
        assert at_restart < len(sent), "the restart came too late to prove anything"
        logs = "".join(proc.output() for proc in procs)
        assert "commit failed" in logs  # the outage was seen, and retried
        assert "Traceback" not in logs, logs[-3000:]
        for proc in procs:
            assert proc.process is not None
            assert proc.process.poll() is None, proc.output()[-2000:]
        anyio.run(check_invariants, url, sent, 8, 1500)
        assert holders(names, sync_redis) == {"w0", "w1"}
    finally:
        for proc in procs:
            proc.stop()


def test_a_deadlock_or_serialization_failure_is_the_stores_outage_never_an_entrys() -> None:
    import asyncpg

    from worker.entries import store_error

    assert store_error(asyncpg.exceptions.DeadlockDetectedError("deadlock detected"))
    assert store_error(asyncpg.exceptions.SerializationError("could not serialize"))
    assert not store_error(asyncpg.exceptions.UniqueViolationError("duplicate key"))
    # seen when PostgreSQL shut down mid-commit: committing event by event on that
    # connection would have dead-lettered each event for the driver's state
    assert store_error(asyncpg.InternalClientError("cannot switch to state 15"))
    assert store_error(asyncpg.exceptions._base.ProtocolError("unexpected message"))


# -- taking a partition: the lease is renewed while its write process starts -----------------


async def test_a_lease_is_renewed_while_a_partitions_store_starts(
    redis_url: str, names: dict[str, str]
) -> None:
    """A partition's write process takes its lock in about half a second, longer on a
    loaded host: the partition's lease (1 s to live here) is renewed meanwhile, so no
    other worker can take it before the lane that renews it has started; an error of
    the start is raised as it is; a lease taken by another meanwhile is LeaseLostError."""
    client = aredis.Redis.from_url(redis_url)
    try:
        lease = RedisLease(client, names["stream"], names["group"], worker_identity("w0"), 1000)
        await lease.acquire()
        await _renewing(lease, anyio.sleep(2.5))  # two and a half times its time to live
        assert json.loads(await client.get(lease.key))["consumer"] == "w0"

        async def refused() -> None:
            raise AlreadyRunningError("another worker is writing partition p")

        with pytest.raises(AlreadyRunningError, match="writing partition p"):
            await _renewing(lease, refused())

        async def stolen() -> None:
            await client.set(lease.key, json.dumps(worker_identity("w1")), px=60_000)
            await anyio.sleep(0.8)

        with pytest.raises(LeaseLostError, match="consumer w1"):
            await _renewing(lease, stolen())
    finally:
        await client.aclose()


def test_a_lost_lease_is_found_inside_a_task_groups_errors() -> None:
    """A lane's lease lost is a warning, not a traceback: the lane's task group wraps it."""
    lost = LeaseLostError("the writer lease k is now held by w1")
    assert _lost_lease(lost) is lost
    assert _lost_lease(ExceptionGroup("lane", [lost])) is lost
    assert _lost_lease(ExceptionGroup("lane", [ExceptionGroup("inner", [lost])])) is lost
    assert _lost_lease(ExceptionGroup("lane", [lost, KeyError("bug")])) is None
    assert _lost_lease(KeyError("bug")) is None
