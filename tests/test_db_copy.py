"""``tradescribe db copy``: an SQLite database moved over to PostgreSQL, verified by
counts and checksums, idempotent, refusing a target that holds other data."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from contracts import AsyncPublisher
from contracts.events import WIRE_FIELD
from contracts.query import run_query
from contracts.query_db import connect_readonly
from tests.helpers import make_settings, run_cli_in_thread, running_worker, wait_for
from tests.pgfix import create_database_sync
from tests.querydata import NOW, publish_history, stored_events
from worker.settings import Settings
from worker.store.pgcopy import TABLES

pytestmark = pytest.mark.timeout(240)


def pg_count(url: str, table: str) -> int:
    with connect_readonly(url) as con:
        return int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


async def copy(source: Any, url: str, *more: str) -> dict[str, Any]:
    done = await run_cli_in_thread("db", "copy", "--from", str(source), "--to", url, *more)
    assert done.code == 0, done.err
    return json.loads(done.out) if "--json" in more else {"out": done.out}


async def _sqlite_history(settings: Settings, client: redis.Redis) -> None:
    """The query tests' history and two dead letters, written by the SQLite worker."""
    async with running_worker(settings):
        await publish_history(settings)
        client.xadd(settings.stream, {WIRE_FIELD: b"not json"})
        client.xadd(settings.stream, {WIRE_FIELD: b'{"id": "x"}'})
        await wait_for(lambda: _dead(settings) == 2, what="two dead letters")


def _dead(settings: Settings) -> int:
    with connect_readonly(settings.db) as con:
        return int(con.execute("SELECT count(*) FROM dead_letters").fetchone()[0])


async def test_copy_moves_every_table_verified_and_a_second_copy_adds_nothing(
    settings: Settings, sync_redis: redis.Redis, postgres_admin_url: str
) -> None:
    await _sqlite_history(settings, sync_redis)
    url = create_database_sync(postgres_admin_url)
    first = await copy(settings.db, url, "--json")
    by_table = {t["table"]: t for t in first["tables"]}
    assert set(by_table) == set(TABLES)
    assert all(t["equal"] and t["sqlite_rows"] == t["postgresql_rows"] for t in first["tables"])
    assert by_table["events"]["copied"] == 19
    assert by_table["dead_letters"]["copied"] == 2
    assert by_table["trades"]["copied"] == 5
    assert by_table["trade_days"]["copied"] > 0
    assert first["copied"] == sum(t["sqlite_rows"] for t in first["tables"])
    again = await copy(settings.db, url, "--json")
    assert again["copied"] == 0
    assert [t["postgresql_checksum"] for t in again["tables"]] == [
        t["sqlite_checksum"] for t in first["tables"]
    ]
    table = await copy(settings.db, url)
    assert "EQUAL: 12 tables" in table["out"]
    assert "copied 0 rows" in table["out"]
    check = await run_cli_in_thread("db", "rebuild", "--check", "--db", url)
    assert check.code == 0, check.out + check.err
    assert "EQUAL" in check.out
    for name, filters in [("history", {}), ("pnl", {"tz": "Europe/Berlin"}), ("calendar", {}),
                          ("trade", {"trade_id": "T2"}), ("positions", {})]:  # fmt: skip
        assert (
            run_query(url, name, filters, now=NOW).as_dict()
            == run_query(settings.db, name, filters, now=NOW).as_dict()
        )


async def test_a_grown_file_copies_only_what_is_new_and_a_worker_goes_on_from_there(
    settings: Settings,
    sync_redis: redis.Redis,
    postgres_admin_url: str,
    redis_url: str,
    names: dict[str, str],
) -> None:
    await _sqlite_history(settings, sync_redis)
    url = create_database_sync(postgres_admin_url)
    await copy(settings.db, url, "--json")
    async with running_worker(settings):  # the SQLite worker goes on meanwhile
        tenant = {"source": "bot-a", "account": "ACC-1", "plugin_id": "p1", "mode": "paper"}
        async with AsyncPublisher(settings.redis_url, stream=settings.stream, **tenant) as pub:
            await pub.publish("trade.closed", trade_id="T1", exit_price="130")
            await pub.publish("trade.opened", trade_id="T9", symbol="ETHUSDT", side="buy",
                              quantity="1", entry_price="10")  # fmt: skip
        await wait_for(lambda: stored_events(settings) == 21, what="two more events")
    grown = await copy(settings.db, url, "--json")
    by_table = {t["table"]: t for t in grown["tables"]}
    assert by_table["events"]["copied"] == 2
    assert by_table["trades"]["postgresql_rows"] == 6
    assert all(t["equal"] for t in grown["tables"])
    # a PostgreSQL worker takes over: its rows number on after the copied ones
    pg = make_settings(url, redis_url, {**names, "stream": names["stream"] + ":pg"})  # type: ignore[arg-type]
    async with running_worker(pg):
        async with AsyncPublisher(pg.redis_url, source="bot-c", stream=pg.stream) as pub:
            await pub.publish("trade.opened", trade_id="C1", symbol="X", side="buy",
                              quantity="1", entry_price="1")  # fmt: skip
        await wait_for(lambda: stored_events(pg) == 22, what="the PostgreSQL worker's event")
    with connect_readonly(url) as con:
        seqs = [r[0] for r in con.execute("SELECT seq FROM events ORDER BY seq").fetchall()]
    assert seqs == sorted(set(seqs))
    assert seqs[-1] > seqs[-2]


async def test_a_target_holding_other_data_is_refused_in_one_line_and_left_alone(
    settings: Settings,
    sync_redis: redis.Redis,
    postgres_admin_url: str,
    redis_url: str,
    names: dict[str, str],
) -> None:
    await _sqlite_history(settings, sync_redis)
    url = create_database_sync(postgres_admin_url)
    pg = make_settings(url, redis_url, {**names, "stream": names["stream"] + ":pg"})  # type: ignore[arg-type]
    async with running_worker(pg):  # another history, written to PostgreSQL directly
        async with AsyncPublisher(pg.redis_url, source="bot-z", stream=pg.stream) as pub:
            await pub.publish("trade.opened", trade_id="Z1", symbol="X", side="buy",
                              quantity="1", entry_price="1")  # fmt: skip
        await wait_for(lambda: stored_events(pg) == 1, what="bot-z's event")
    done = await run_cli_in_thread("db", "copy", "--from", str(settings.db), "--to", url)
    assert done.code == 1
    assert done.err.count("\n") == 1, done.err
    assert "holds other data than the file (1 events rows the file has not)" in done.err
    assert (pg_count(url, "events"), pg_count(url, "trades")) == (1, 1)  # nothing written
    missing = await run_cli_in_thread("db", "copy", "--from", "nope.db", "--to", url)
    assert missing.code == 1
    assert missing.err.startswith("error: nope.db does not exist")
