"""PostgreSQL as the store: the write path's guarantees, on a server the suite starts
(tests/pgfix.py; skipped, with the reason, where none can start)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
import redis
from typer.testing import CliRunner

from bench.drain import child_pids
from bench.workload import wire_events
from contracts import AsyncPublisher, Publisher, build_event, to_wire
from contracts.vocabulary import SETTLED_CHANGED
from tests.helpers import (
    WorkerProcess,
    alive,
    count,
    make_settings,
    pending,
    run_cli,
    running_worker,
    wait_for,
    worker_listening,
)
from tests.pgfix import create_database
from worker.cli.app import app
from worker.entries import decode, store_error
from worker.errors import AlreadyRunningError, ConfigError
from worker.settings import Settings, load_settings
from worker.store import pgsql
from worker.store.pgmaint import migrate, rebuild, rebuild_check
from worker.store.postgres import PostgresStore
from worker.store.writer import error_for_parent

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def pg_url(postgres_admin_url: str) -> str:
    return await create_database(postgres_admin_url)


@pytest.fixture
def pg_settings(pg_url: str, tmp_path: Any, redis_url: str, names: dict[str, str]) -> Settings:
    return make_settings(pg_url, redis_url, names)  # type: ignore[arg-type]


async def pg_fetch(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    con = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await con.fetch(sql, *args)]
    finally:
        await con.close()


async def pg_count(url: str, table: str) -> int:
    """Rows in ``table``; 0 before the worker made it."""
    try:
        return int((await pg_fetch(url, f"SELECT count(*) FROM {table}"))[0][0])
    except asyncpg.UndefinedTableError:
        return 0


async def wait_count(url: str, table: str, n: int, timeout: float = 30.0) -> None:
    """Poll until ``table`` holds ``n`` rows; fail after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while (have := await pg_count(url, table)) != n:
            assert have < n, f"{table} holds {have} rows, more than {n}"
            await anyio.sleep(0.05)


async def wait_at_least(url: str, table: str, n: int, timeout: float = 60.0) -> None:
    with anyio.fail_after(timeout):
        while True:
            if await pg_count(url, table) >= n:
                return
            await anyio.sleep(0.02)


async def test_worker_on_postgres_stores_published_events_exactly_once(
    pg_settings: Settings, sync_redis: redis.Redis, names: dict[str, str]
) -> None:
    s, url = pg_settings, pg_settings.database_url
    assert url is not None
    ids = []
    with Publisher(s.redis_url, source="bot-pg", stream=s.stream) as pub:
        for i in range(300):
            data = {"trade_id": f"T{i}", "symbol": "BTCUSDT", "side": "buy", "quantity": "1",
                    "entry_price": "100"}  # fmt: skip
            ids.append(pub.publish("trade.opened", data))
    async with running_worker(s):
        await wait_count(url, "events", 300)
        await wait_for(lambda: pending(sync_redis, names) == 0)
    assert await pg_count(url, "trades") == 300
    stored = {r[0] for r in await pg_fetch(url, "SELECT event_id FROM events")}
    assert stored == set(ids)


# Every projection the worker writes; the aggregates are kept as running float sums and
# compared to the millionth, without the rows of 0 trades a reopened trade leaves.
_ENTITY_TABLES = {
    "trades": "source, trade_id",
    "signals": "source, signal_id",
    "positions": "account, source, mode, position_key",
    "daily_stats": "account, source, plugin_id, mode, date",
    "trade_status_history": "event_id",
    "journal_entries": "event_id",
    "audit_log": "event_id",
}
_AGGREGATE_TABLES = {
    "trade_days": "day, account, source, plugin_id, mode, strategy",
    "trade_months": "month, account, source, plugin_id, mode, strategy, symbol, side",
}
_JSON = {"attributes", "versions", "tags", "details"}


def _normal(names: list[str], row: tuple[Any, ...], aggregate: bool) -> tuple[Any, ...]:
    out = []
    for name, value in zip(names, row, strict=True):
        if name in _JSON and isinstance(value, str):
            value = json.loads(value)
        elif aggregate and isinstance(value, float):
            value = round(value, 6)
        out.append(value)
    return tuple(out)


def sqlite_rows(db: Path, table: str, order: str) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db)
    try:
        where = " WHERE trades > 0" if table in _AGGREGATE_TABLES else ""
        cur = con.execute(f"SELECT * FROM {table}{where} ORDER BY {order}")
        names = [d[0] for d in cur.description]
        return [_normal(names, r, table in _AGGREGATE_TABLES) for r in cur]
    finally:
        con.close()


async def postgres_rows(url: str, table: str, order: str) -> list[tuple[Any, ...]]:
    con = await asyncpg.connect(url)
    try:
        where = " WHERE trades > 0" if table in _AGGREGATE_TABLES else ""
        records = await con.fetch(f"SELECT * FROM {table}{where} ORDER BY {order}")
        names = list(records[0].keys()) if records else []
        return [_normal(names, tuple(r), table in _AGGREGATE_TABLES) for r in records]
    finally:
        await con.close()


async def test_postgres_projections_equal_sqlites_for_the_same_events(
    pg_settings: Settings, tmp_path: Path, sync_redis: redis.Redis, names: dict[str, str]
) -> None:
    bodies = list(wire_events(3990, seed=11))
    bodies += [  # audit_log's "user" column is a reserved word in PostgreSQL
        _wire("audit.event", action="config.changed", user=f"ops-{i}", details={"risk": i})
        for i in range(10)
    ]
    shuffled = random.Random(5).sample(bodies, len(bodies))  # PostgreSQL hears another order
    lite = make_settings(tmp_path / "lite.db", pg_settings.redis_url,
                         {**names, "stream": names["stream"] + ":lite"})  # fmt: skip
    for stream, order in ((lite.stream, bodies), (pg_settings.stream, shuffled)):
        pipe = sync_redis.pipeline(transaction=False)
        for body in order:
            pipe.xadd(stream, {"event": body})
        pipe.execute()
    url = pg_settings.database_url
    assert url is not None
    async with running_worker(lite):
        await wait_for(lambda: count(lite.db, "events") == 4000, 60)
    async with running_worker(pg_settings.model_copy(update={"batch_max": 300})):
        await wait_count(url, "events", 4000, 60)
    compared = {}
    for table, order in {**_ENTITY_TABLES, **_AGGREGATE_TABLES}.items():
        want = sqlite_rows(lite.db, table, order)
        got = await postgres_rows(url, table, order)
        assert got == want, f"{table} differs"
        compared[table] = len(want)
    print("equal on both engines:", compared)
    assert compared["trades"] > 500
    assert compared["trade_days"] > 0


def _wire(event_type: str, **data: Any) -> str:
    return to_wire(build_event(event_type, data, source="bot-dl"))


async def test_postgres_dead_letters_and_id_conflicts_behave_as_on_sqlite(
    pg_settings: Settings, sync_redis: redis.Redis, names: dict[str, str]
) -> None:
    s, url = pg_settings, pg_settings.database_url
    assert url is not None
    first = json.loads(_wire("trade.opened", trade_id="T1", symbol="X", side="buy",
                             quantity="1", entry_price="100"))  # fmt: skip
    other = {**first, "data": {**first["data"], "trade_id": "T2"}}  # the same id, another body
    bad = {**first, "id": str(uuid.uuid4()), "data": {**first["data"], "quantity": "-5"}}
    sync_redis.xadd(s.stream, {"event": json.dumps(first)})
    sync_redis.xadd(s.stream, {"event": json.dumps(first)})  # a duplicate: no dead letter
    sent = {
        "invalid": sync_redis.xadd(s.stream, {"event": json.dumps(bad)}).decode(),
        "utf8": sync_redis.xadd(s.stream, {"event": b"\xff not json"}).decode(),
        "field": sync_redis.xadd(s.stream, {"wrong": "field"}).decode(),
        "huge": sync_redis.xadd(s.stream, {"event": b"x" * 70_000}).decode(),
        "conflict": sync_redis.xadd(s.stream, {"event": json.dumps(other)}).decode(),
    }
    sync_redis.xadd(s.stream, {"event": _wire("journal.entry", text="after")})
    async with running_worker(s):
        await wait_count(url, "dead_letters", 5)
        await wait_count(url, "journal_entries", 1)
        await wait_for(lambda: pending(sync_redis, names) == 0)
    rows = {
        r[0]: r[1:]
        for r in await pg_fetch(
            url, "SELECT stream_id, event_id, reason, raw, raw_size, raw_sha256 FROM dead_letters"
        )
    }
    assert (
        rows[sent["invalid"]][1] == "invalid event: data.quantity: Input should be greater than 0"
    )
    assert json.loads(rows[sent["invalid"]][2]) == bad  # the exact bytes, kept for replay
    assert rows[sent["utf8"]][1].startswith("not UTF-8: ")
    assert rows[sent["field"]][1] == "entry has no 'event' field (it has: wrong)"
    huge = rows[sent["huge"]]
    assert huge[3] == 70_000
    assert huge[4] == hashlib.sha256(b"x" * 70_000).hexdigest()
    assert len(huge[2]) < 70_000
    conflict = rows[sent["conflict"]]
    assert conflict[0] == first["id"]
    assert conflict[1].startswith(f"id conflict: event {first['id']} is in the event log")
    # the conflicting body's change is not applied: T2 never exists, T1 is as first sent
    assert await pg_fetch(url, "SELECT trade_id FROM trades") == [("T1",)]
    assert await pg_count(url, "events") == 2  # T1 and the journal entry


async def test_the_appends_of_a_refused_event_are_left_out(
    pg_url: str,
) -> None:
    """A batch's append-only rows (status history, journal) go in only for the events
    the log took: an id conflict's rows stay out, whatever their table (a journal row
    for an id the log holds as a trade), and the rest of the batch's go in."""
    opened = build_event("trade.opened", {"trade_id": "T1", "symbol": "X", "side": "buy",
                         "quantity": "1", "entry_price": "100"}, source="bot-a")  # fmt: skip
    # the same id with a journal body: its journal row must not appear
    conflict = json.loads(to_wire(opened))
    conflict.update(type="journal.entry", data={"text": "not mine"})
    fresh = build_event("journal.entry", {"text": "mine"}, source="bot-a")

    def batch(*wires: str, first: int) -> list[Any]:
        entries = [(f"{first + i}-0", {b"event": w.encode()}) for i, w in enumerate(wires)]
        good, dead, later = decode(entries, {}, 1 << 20)
        assert (dead, later) == ([], [])
        return good

    store = await PostgresStore.open(pg_url)
    try:
        await store.migrate()
        assert await store.commit(batch(to_wire(opened), first=1), []) == (1, 0)
        again = batch(json.dumps(conflict), to_wire(fresh), first=10)
        assert await store.commit(again, []) == (1, 1)  # the fresh entry; one conflict
        assert await store.commit(batch(to_wire(opened), first=20), []) == (0, 0)  # a copy
    finally:
        await store.close()
    assert await pg_fetch(pg_url, "SELECT event_id, status FROM trade_status_history") == [
        (opened.id, "open")
    ]
    assert await pg_fetch(pg_url, "SELECT event_id, text FROM journal_entries") == [
        (fresh.id, "mine")
    ]
    dead = await pg_fetch(pg_url, "SELECT event_id, reason FROM dead_letters")
    assert [(d[0], d[1].split(":")[0]) for d in dead] == [(opened.id, "id conflict")]


class PgWorkerProcess(WorkerProcess):
    """``tradescribe worker --db postgresql://...`` as a child process."""

    def env(self) -> dict[str, str]:
        env = super().env()
        assert self.settings.database_url is not None
        env["TRADESCRIBE_DB"] = self.settings.database_url
        return env


def publish_trades(client: redis.Redis, stream: str, n: int) -> list[str]:
    """n trade.opened events, pipelined; their ids."""
    ids = []
    for start in range(0, n, 1000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(n, start + 1000)):
            event = build_event("trade.opened", {"trade_id": f"T{i}", "symbol": "BTCUSDT",
                                "side": "buy", "quantity": "1", "entry_price": "100"},
                                source="bot-kill")  # fmt: skip
            ids.append(event.id)
            pipe.xadd(stream, {"event": to_wire(event)})
        pipe.execute()
    return ids


def test_postgres_worker_sigkilled_and_restarted_stores_every_event_exactly_once(
    pg_settings: Settings, sync_redis: redis.Redis, names: dict[str, str], tmp_path: Path
) -> None:
    s = pg_settings.model_copy(update={"batch_max": 500})
    url = s.database_url
    assert url is not None
    first = PgWorkerProcess(s, tmp_path / "w1.log").start()
    second: PgWorkerProcess | None = None
    try:
        ids = publish_trades(sync_redis, s.stream, 20_000)

        anyio.run(wait_at_least, url, "events", 4000)
        first.kill()
        stored_at_kill = anyio.run(pg_count, url, "events")
        second = PgWorkerProcess(s, tmp_path / "w2.log").start()
        anyio.run(wait_count, url, "events", 20_000, 90)
        anyio.run(wait_for, lambda: pending(sync_redis, names) == 0)
        print(f"sent 20000, stored {stored_at_kill} before SIGKILL, 20000 after restart")
        stored = anyio.run(pg_fetch, url, "SELECT event_id FROM events")
        assert len(stored) == 20_000  # nothing twice (event_id is unique besides)
        assert {r[0] for r in stored} == set(ids)
        assert anyio.run(pg_count, url, "trades") == 20_000
        assert stored_at_kill < 20_000, "the kill came too late to prove anything"
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.stop()


def test_a_second_worker_on_the_same_postgres_database_refuses_to_start(
    pg_settings: Settings, tmp_path: Path
) -> None:
    first = PgWorkerProcess(pg_settings, tmp_path / "first.log").start()
    # another stream and group: only the database's advisory lock can stop it
    other = pg_settings.model_copy(
        update={"stream": pg_settings.stream + ":2", "group": pg_settings.group + "-2"}
    )
    second = PgWorkerProcess(other, tmp_path / "second.log")
    try:
        anyio.run(wait_for, lambda: "started" in first.output(), 30)
        second.start()
        assert second.wait() == 1
        out = second.output()
        assert "another worker, tradescribe pid " in out, out
        assert "is writing to this PostgreSQL database" in out, out
        assert "Traceback" not in out
    finally:
        first.stop()
        second.stop()


async def test_postgres_rebuild_from_the_log_is_equal(
    pg_settings: Settings, sync_redis: redis.Redis
) -> None:
    url = pg_settings.database_url
    assert url is not None
    pipe = sync_redis.pipeline(transaction=False)
    for body in wire_events(3000, seed=13):
        pipe.xadd(pg_settings.stream, {"event": body})
    pipe.execute()
    async with running_worker(pg_settings.model_copy(update={"batch_max": 250})):
        await wait_count(url, "events", 3000, 60)
    result = await rebuild_check(url)
    print("rebuild check:", result["events_replayed"], result["tables"])
    assert result["equal"], result["tables"]
    assert result["events_replayed"] == 3000
    assert result["tables"]["trades"]["live"] > 500
    # a check changes nothing; a rebuild replays the log into the same rows and, as on
    # SQLite, tells readers keeping settled months' sums to read them again
    settled = "SELECT value FROM meta WHERE key = $1"
    before = await pg_fetch(url, settled, SETTLED_CHANGED)
    assert (await rebuild(url))["events_replayed"] == 3000
    assert (await rebuild_check(url))["equal"]
    after = await pg_fetch(url, settled, SETTLED_CHANGED)
    assert int(after[0][0]) == (int(before[0][0]) if before else 0) + 1


def test_db_version_and_migrate_work_on_a_postgres_url(pg_url: str) -> None:
    before = run_cli("db", "version", "--db", pg_url, "--json")
    assert before.code == 0, before.err
    assert before.json()["version"] == 0
    dry = run_cli("db", "migrate", "--db", pg_url, "--dry-run")
    assert dry.code == 0, dry.err
    assert "schema version 0 -> 2" in dry.out
    assert "would apply migration 1" in dry.out
    assert "would apply migration 2" in dry.out
    done = run_cli("db", "migrate", "--db", pg_url)
    assert done.code == 0, done.err
    assert "applied migration 1" in done.out
    assert "applied migration 2" in done.out
    again = run_cli("db", "migrate", "--db", pg_url)
    assert "nothing to do: up to date" in again.out
    after = run_cli("db", "version", "--db", pg_url)
    assert "schema version 2 (this tradescribe: 2; up to date)" in after.out
    check = run_cli("db", "rebuild", "--check", "--db", pg_url)
    assert check.code == 0, check.err
    assert "EQUAL" in check.out


def test_a_database_url_is_checked_with_a_one_line_error() -> None:
    s = load_settings(db="postgresql://scribe:s3cret@db.example:5433/trades")
    assert s.engine == "postgresql"
    assert s.database_url == "postgresql://scribe:s3cret@db.example:5433/trades"
    assert "s3cret" not in s.db_label
    assert "s3cret" not in json.dumps(s.public())
    assert load_settings(db="some/file.db").engine == "sqlite"
    for bad, why in (
        ("postgresql://scribe@db.example/", "names no database"),
        ("postgresql://scribe:s3cret@db.example:port/trades", "is not a valid URL"),
        ("mysql://scribe@db.example/trades", "a file path or a postgresql:// URL"),
    ):
        with pytest.raises(ConfigError) as err:
            load_settings(db=bad)
        assert why in str(err.value)
        assert "s3cret" not in str(err.value)
        assert "\n" not in str(err.value)


async def test_a_terminated_postgres_session_is_reopened_and_nothing_is_lost_or_doubled(
    pg_settings: Settings, sync_redis: redis.Redis, names: dict[str, str]
) -> None:
    s = pg_settings.model_copy(update={"batch_max": 200})
    url = s.database_url
    assert url is not None
    ids = publish_trades(sync_redis, s.stream, 6000)
    async with running_worker(s) as worker:
        await wait_at_least(url, "events", 1000)
        killed = await pg_fetch(
            url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE 'tradescribe pid %' AND pid <> pg_backend_pid()",
        )
        # the worker's two sessions: its write process's, the writer lock with it, and
        # the one for the schema and reads
        assert killed == [(True,), (True,)]
        await wait_count(url, "events", 6000, 60)
        await wait_for(lambda: pending(sync_redis, names) == 0)
        assert worker.stats.dead_letters == 0  # an outage of the store is never an entry's
    stored = await pg_fetch(url, "SELECT event_id FROM events")
    assert sorted(r[0] for r in stored) == sorted(ids)
    assert await pg_count(url, "dead_letters") == 0
    assert await pg_count(url, "trades") == 6000


async def test_a_reconnect_that_finds_the_lock_taken_keeps_trying_for_the_lock(
    pg_url: str,
) -> None:
    """The writer's session is terminated and another session takes the writer's lock
    meanwhile: every reconnect refuses until the lock is free again, then holds it (the
    second reconnect once went on without the lock, writing beside the other writer)."""
    store = await PostgresStore.open(pg_url)
    other = await asyncpg.connect(pg_url)
    try:
        await store.lock_writer({})
        await store.migrate()
        await other.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE 'tradescribe pid %'"
        )
        await other.execute("SELECT pg_advisory_lock($1, $2)", *pgsql.LOCK_KEYS)  # waits
        # The first use of the old connection may fail on its own (the driver learns of
        # the termination then); that is the store's outage, never the batch's.
        with pytest.raises(Exception, match=".") as first:
            await store.schema_version()
        assert store_error(first.value), first.value
        for _ in range(3):
            with pytest.raises(ConnectionError, match="not the writer any more"):
                await store.schema_version()
        await other.execute("SELECT pg_advisory_unlock($1, $2)", *pgsql.LOCK_KEYS)
        assert await store.schema_version() == pgsql.SCHEMA_VERSION
        taken = await other.fetchval("SELECT pg_try_advisory_lock($1, $2)", *pgsql.LOCK_KEYS)
        assert taken is False  # the store holds the writer's lock again
    finally:
        await other.close()
        await store.close()


async def test_status_reports_the_postgres_database_and_the_worker_answers_queries(
    pg_settings: Settings,
) -> None:
    s, url = pg_settings, pg_settings.database_url
    assert url is not None
    where = ["--redis-url", s.redis_url, "--stream", s.stream, "--group", s.group]
    runner = CliRunner()

    async def cli(*args: str) -> Any:
        return await anyio.to_thread.run_sync(lambda: runner.invoke(app, [*args, *where]))

    async with running_worker(s) as worker:
        await worker_listening(s)
        async with AsyncPublisher(s.redis_url, source="bot-st", stream=s.stream) as pub:
            await pub.publish("journal.entry", text="hello")
        await wait_for(lambda: worker.stats.committed == 1)
        status = await cli("status", "--json")
        remote = await cli("query", "journal", "--json")
    assert status.exit_code == 0, status.output
    got = json.loads(status.stdout)
    assert got["db_path"] == s.db_label
    assert got["events_stored"] == 1
    assert got["schema_version"] == 2  # 0002.sql: dead letters known by stream
    assert got["db_bytes"] > 0
    assert remote.exit_code == 0, remote.output
    assert [r["text"] for r in json.loads(remote.stdout)["rows"]] == ["hello"]


async def test_a_nul_character_postgres_text_cannot_hold_is_an_invalid_events_dead_letter(
    pg_settings: Settings, sync_redis: redis.Redis, names: dict[str, str]
) -> None:
    """PostgreSQL's text holds no NUL character (SQLite's does); the contract refuses one
    in any string, so such an entry is dead-lettered at decoding, as on SQLite."""
    s, url = pg_settings, pg_settings.database_url
    assert url is not None
    body = json.loads(_wire("journal.entry", text="x"))
    body["data"]["text"] = "x\u0000y"
    sync_redis.xadd(s.stream, {"event": _wire("journal.entry", text="before")})
    nul = sync_redis.xadd(s.stream, {"event": json.dumps(body)}).decode()
    sync_redis.xadd(s.stream, {"event": _wire("journal.entry", text="after")})
    async with running_worker(s):
        await wait_count(url, "dead_letters", 1)
        await wait_count(url, "journal_entries", 2)
        await wait_for(lambda: pending(sync_redis, names) == 0)
    rows = await pg_fetch(url, "SELECT stream_id, reason FROM dead_letters")
    assert rows[0][0] == nul
    assert rows[0][1].startswith("invalid event: data.text"), rows
    assert "\\u0000" in json.dumps(body)  # a NUL, escaped on the wire
    assert await pg_count(url, "events") == 2


async def test_migrate_and_rebuild_refuse_while_a_worker_writes_to_the_database(
    pg_settings: Settings,
) -> None:
    url = pg_settings.database_url
    assert url is not None
    async with running_worker(pg_settings):
        for step in (rebuild(url), migrate(url, dry_run=False)):
            with pytest.raises(AlreadyRunningError, match="is writing to this PostgreSQL"):
                await step
    assert (await rebuild(url))["events_replayed"] == 0  # the worker gone, it runs


def _until(condition: Any, timeout: float, what: str) -> Any:
    """Poll a sync ``condition`` (which may run its own event loop) until truthy."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.02)
    return result


async def _until_async(condition: Any, timeout: float, what: str) -> None:
    """Poll an async ``condition`` until it is true."""
    with anyio.fail_after(timeout):
        while True:
            if await condition():
                return
            await anyio.sleep(0.02)


def _write_process(proc: WorkerProcess, timeout: float = 30.0) -> int:
    """The pid of the worker's PostgreSQL write process, once there is one."""
    assert proc.process is not None
    pid = proc.process.pid
    return int(_until(lambda: child_pids(pid), timeout, f"a write process: {proc.output()}")[0])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_the_postgres_write_process_killed_mid_stream_is_restarted_and_loses_nothing(
    pg_settings: Settings, sync_redis: redis.Redis, names: dict[str, str], tmp_path: Path
) -> None:
    """The commits run in a child (worker/store/pgwriter.py) holding the writer's lock:
    killed with -9 three times mid-stream, its transaction is rolled back, the worker
    starts another (which takes the lock again) and retries the batch; sent = stored,
    nothing twice, nothing pending, ``rebuild --check`` EQUAL."""
    s = pg_settings.model_copy(update={"batch_max": 500})
    url = s.database_url
    assert url is not None
    sent = 20_000
    ids = publish_trades(sync_redis, s.stream, sent)
    proc = PgWorkerProcess(s, tmp_path / "w.log").start()
    try:
        assert proc.process is not None
        kills = 0
        while kills < 3 and (stored := anyio.run(pg_count, url, "events")) < sent:
            writer = _write_process(proc)
            anyio.run(wait_at_least, url, "events", stored + 1)  # mid-stream: it commits
            os.kill(writer, signal.SIGKILL)
            kills += 1
            _until(
                lambda w=writer: (
                    set(child_pids(proc.process.pid)) - {w}  # type: ignore[union-attr]
                    or anyio.run(pg_count, url, "events") == sent
                ),
                30,
                "a new write process (or the kill came after the last commit)",
            )
        anyio.run(wait_count, url, "events", sent, 90)
        anyio.run(wait_for, lambda: pending(sync_redis, names) == 0)
        print(f"sent {sent}, killed the PostgreSQL write process {kills} times mid-stream")
        assert kills == 3
        assert "the write process exited" in proc.output()
    finally:
        proc.stop()
    stored_ids = anyio.run(pg_fetch, url, "SELECT event_id FROM events")
    assert len(stored_ids) == sent  # nothing twice (event_id is unique besides)
    assert {r[0] for r in stored_ids} == set(ids)
    assert anyio.run(pg_count, url, "trades") == sent
    assert anyio.run(pg_count, url, "dead_letters") == 0
    check = anyio.run(rebuild_check, url)
    assert check["equal"], check["tables"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_a_worker_killed_with_minus_9_takes_its_postgres_write_process_and_lock_along(
    pg_settings: Settings, sync_redis: redis.Redis, names: dict[str, str], tmp_path: Path
) -> None:
    """The write process waits for a table another session locked, with a batch in
    hand, when the worker is killed with -9: it dies at once (PR_SET_PDEATHSIG), so the
    batch is never committed for a dead worker, and the writer's lock is free."""
    url = pg_settings.database_url
    assert url is not None
    proc = PgWorkerProcess(pg_settings, tmp_path / "w.log").start()
    publish_trades(sync_redis, pg_settings.stream, 10)
    anyio.run(wait_count, url, "events", 10, 60)
    writer = _write_process(proc)

    async def scenario() -> None:
        foreign = await asyncpg.connect(url)
        try:
            async with foreign.transaction():
                await foreign.execute("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE")
                with sync_redis.pipeline(transaction=False) as pipe:
                    for i in range(10):
                        event = build_event("trade.opened", {"trade_id": f"L{i}",
                                            "symbol": "BTCUSDT", "side": "buy",
                                            "quantity": "1", "entry_price": "100"},
                                            source="bot-late")  # fmt: skip
                        pipe.xadd(pg_settings.stream, {"event": to_wire(event)})
                    pipe.execute()
                # the batch is in the write process's hands: it waits for the table
                waiting = (
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND application_name LIKE 'tradescribe pid % writer %'"
                )
                await wait_for(lambda: pending(sync_redis, names) == 10, 10, "the batch read")

                async def blocked() -> bool:
                    return bool(await foreign.fetchval(waiting) == 1)

                await _until_async(blocked, 10, "the write process waiting for the table")
                assert alive(writer)
                proc.kill()
                await wait_for(lambda: not alive(writer), 1.5, "the write process to die")
        finally:
            await foreign.close()
        assert await pg_count(url, "events") == 10  # the late batch never committed
        free = await pg_fetch(url, "SELECT pg_try_advisory_lock($1, $2)", *pgsql.LOCK_KEYS)
        assert free == [(True,)]  # the writer's lock went with its session

    try:
        anyio.run(scenario)
    finally:
        proc.stop()


def test_an_error_that_cannot_be_pickled_reaches_the_worker_as_its_kind() -> None:
    """The write process answers with its exception; one that cannot be pickled is
    sent as an OSError when it is the store's (retried) and a ValueError when it is the
    batch's (committed event by event), never the other way round."""

    class Deadlock(asyncpg.DeadlockDetectedError):  # local: cannot be pickled
        pass

    class BadText(asyncpg.InvalidTextRepresentationError):
        pass

    for exc, kind, stores in (
        (Deadlock("deadlock detected"), OSError, True),
        (BadText("invalid input syntax"), ValueError, False),
    ):
        assert store_error(exc) is stores
        sent = error_for_parent(exc)
        assert type(sent) is kind
        assert store_error(sent) is stores
        assert str(exc) in str(sent)
    kept = asyncpg.UniqueViolationError("duplicate key")
    assert error_for_parent(kept) is kept  # pickles: its own class, its SQLSTATE
