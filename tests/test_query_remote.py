"""The third door: the same queries over the request channel, answered by the worker."""

from __future__ import annotations

import json
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from contracts import Publisher, new_event_id
from contracts.client import REPLY_PREFIX, Client, request_channel
from contracts.errors import RequestFailedError
from contracts.events import WIRE_FIELD
from contracts.query import DeadLetteredError, Reader, run_query
from contracts.query_db import connect_readonly
from tests.conftest import database_of
from tests.helpers import running_worker, tradescribe, wait_for, worker_listening
from worker.settings import Settings

# A 200-column terminal, so a table row is one line; the suite's channel key, which the
# remote queries need.
wide_tradescribe = partial(tradescribe, columns=200, channel_key=True)

SAME_ON_BOTH_DOORS: list[tuple[str, dict[str, Any]]] = [
    ("active-trades", {}),
    ("active-trades", {"source": "bot-a", "account": "ACC-1"}),
    ("active-signals", {"mode": "paper"}),
    ("positions", {"source": "bot-a"}),
    ("history", {"symbol": "btc", "limit": 10}),
    ("calendar", {"since": "2026-11-01", "until": "2026-11-30", "tz": "Europe/Berlin"}),
    ("daily-loss", {"date": "2026-11-18"}),
    ("plugins", {}),
    ("strategies", {"account": "ACC-1"}),
    ("trade", {"trade_id": "T2", "source": "bot-a"}),
    ("journal", {"date": "2026-11-16"}),
]


def dead_letters(settings: Settings) -> int:
    with connect_readonly(database_of(settings)) as con:
        return int(con.execute("SELECT count(*) FROM dead_letters").fetchone()[0])


def client_for(settings: Settings, timeout_s: float = 5.0) -> Client:
    return Client(
        settings.redis_url, stream=settings.stream, group=settings.group, timeout_s=timeout_s
    )


async def ask(settings: Settings, call: Any) -> Any:
    """Run ``call(client)`` in a thread (the client is synchronous, like a bot's)."""
    with client_for(settings) as client:
        return await anyio.to_thread.run_sync(call, client)


async def test_every_query_over_the_channel_equals_the_local_door(
    engine_settings: Settings, history_db: Path | str
) -> None:
    settings = engine_settings  # a worker on the SQLite file, and one on PostgreSQL
    answers = {}
    async with running_worker(settings):
        await worker_listening(settings)
        for name, filters in SAME_ON_BOTH_DOORS:
            remote = await ask(settings, lambda c, n=name, f=filters: c.query(n, f))
            local = json.loads(json.dumps(run_query(history_db, name, filters).as_dict()))
            assert remote == local, name
            answers[name] = remote
    assert sorted(r["trade_id"] for r in answers["active-trades"]["rows"]) == ["T1"]
    assert [r["trade_id"] for r in answers["history"]["rows"]] == ["T2", "T1"]
    assert answers["history"]["summary"]["net"] == 15.0
    assert answers["daily-loss"]["rows"][0]["daily_loss_used"] == 1250
    assert [r["text"] for r in answers["journal"]["rows"]] == ["monday notes"]


@pytest.mark.parametrize(
    ("name", "filters", "message"),
    [
        ("nope", {}, "unknown query 'nope'; choose one of: active-trades"),
        ("pnl", {"symbol": "BTC"}, "query 'pnl' does not take symbol"),
        ("history", {"tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ("history", {"limit": 0}, "limit"),
        ("DROP TABLE trades", {}, "name"),
        ("history", {"wait_timeout_s": 3600, "wait_for": new_event_id()}, "<= 30"),
    ],
)
async def test_a_bad_query_gets_a_bad_args_reply_and_the_worker_keeps_answering(
    settings: Settings, name: str, filters: dict[str, Any], message: str
) -> None:
    async with running_worker(settings):
        await worker_listening(settings)
        with pytest.raises(RequestFailedError) as err:
            await ask(settings, lambda c: c.query(name, filters))
        again = await ask(settings, lambda c: c.query("active-trades"))
    assert err.value.code == "bad_args"
    assert message in err.value.message
    assert again["name"] == "active-trades"
    assert again["rows"] == []


async def test_a_path_or_sql_in_the_arguments_is_refused(settings: Settings) -> None:
    async with running_worker(settings):
        await worker_listening(settings)
        with pytest.raises(RequestFailedError) as err:
            await ask(
                settings,
                lambda c: c.request("query", {"name": "history", "db": "/etc/passwd"}),
            )
        with pytest.raises(RequestFailedError) as nested:
            await ask(
                settings,
                lambda c: c.request(
                    "query", {"name": "history", "filters": {"symbol": {"sql": "1=1"}}}
                ),
            )
    assert err.value.code == "bad_args"
    assert "db" in err.value.message
    assert nested.value.code == "bad_args"
    assert "filters.symbol" in nested.value.message


async def test_query_cli_over_redis_prints_what_the_db_door_prints(
    engine_settings: Settings, history_db: Path | str
) -> None:
    settings = engine_settings
    common = ["query", "active-trades", "--account", "ACC-1", "--json"]
    local = wide_tradescribe(*common, "--db", history_db)
    remote_args = ["--redis-url", settings.redis_url, "--stream", settings.stream,
                   "--group", settings.group]  # fmt: skip
    async with running_worker(settings):
        await worker_listening(settings)
        remote = await anyio.to_thread.run_sync(lambda: wide_tradescribe(*common, *remote_args))
        table = await anyio.to_thread.run_sync(
            lambda: wide_tradescribe("query", "history", "--symbol", "btc", *remote_args)
        )
        table_local = wide_tradescribe("query", "history", "--symbol", "btc", "--db", history_db)
        csv_remote = await anyio.to_thread.run_sync(
            lambda: wide_tradescribe("query", "plugins", "--csv", *remote_args)
        )
        bad = await anyio.to_thread.run_sync(
            lambda: wide_tradescribe("query", "pnl", "--symbol", "BTC", *remote_args)
        )
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout
    assert [r["trade_id"] for r in json.loads(remote.stdout)["rows"]] == ["T1"]
    assert table.stdout == table_local.stdout
    assert "T2" in table.stdout
    assert (
        csv_remote.stdout
        == wide_tradescribe("query", "plugins", "--csv", "--db", history_db).stdout
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith("error: query 'pnl' does not take --symbol")


async def test_query_cli_without_a_worker_is_one_line_and_exit_2(settings: Settings) -> None:
    args = ["--redis-url", settings.redis_url, "--stream", settings.stream,
            "--group", settings.group]  # fmt: skip
    out = wide_tradescribe("query", "active-trades", *args)
    status = wide_tradescribe("status", *args)
    assert out.returncode == 2
    assert status.returncode == 2
    assert out.stderr == status.stderr
    assert out.stderr.startswith("error: no worker is listening on tradescribe:requests:")
    assert out.stderr.count("\n") == 1
    assert out.stdout == ""
    both = wide_tradescribe("query", "active-trades", *args, "--db", settings.db)
    assert both.returncode == 1
    assert both.stderr.strip() == (
        "error: give --db (read the file here) or --redis-url (ask the worker), not both"
    )


def open_trade(settings: Settings, trade_id: str) -> str:
    with Publisher(settings.redis_url, source="bot-r", stream=settings.stream) as pub:
        return pub.publish("trade.opened", trade_id=trade_id, symbol="EURUSD", side="buy",
                           quantity="1", entry_price="1.08")  # fmt: skip


async def test_a_bot_reads_its_own_write_over_the_channel(engine_settings: Settings) -> None:
    settings = engine_settings

    def publish_then_ask(client: Client) -> dict[str, Any]:
        event_id = open_trade(settings, "R1")
        return client.query("active-trades", {"source": "bot-r"}, wait_for=event_id)

    async with running_worker(settings):
        await worker_listening(settings)
        result = await ask(settings, publish_then_ask)
    assert [(r["trade_id"], r["status"]) for r in result["rows"]] == [("R1", "open")]


async def test_a_bot_reads_its_own_write_with_the_local_reader(
    engine_settings: Settings,
) -> None:
    settings = engine_settings
    db = database_of(settings)

    def publish_then_read() -> list[dict[str, Any]]:
        event_id = open_trade(settings, "L1")
        return Reader(db, source="bot-r").query("active-trades", wait_for=event_id).rows

    async with running_worker(settings):
        await worker_listening(settings)  # the database exists, migrated
        rows = await anyio.to_thread.run_sync(publish_then_read)
    assert [(r["trade_id"], r["status"]) for r in rows] == [("L1", "open")]


async def test_wait_reports_committed_unknown_and_dead_lettered_ids(
    engine_settings: Settings, sync_redis: redis.Redis
) -> None:
    settings = engine_settings
    dead_id = new_event_id()
    bad = {"id": dead_id, "type": "trade.opened", "source": "bot-r",
           "ts": "2026-11-18T10:00:00Z", "data": {"trade_id": "D1"}}  # fmt: skip
    async with running_worker(settings):
        await worker_listening(settings)
        good_id = await anyio.to_thread.run_sync(open_trade, settings, "W1")
        sync_redis.xadd(settings.stream, {WIRE_FIELD: json.dumps(bad)})
        await wait_for(lambda: dead_letters(settings) == 1, what="a dead letter")
        committed = await ask(settings, lambda c: c.wait_for_event(good_id, 10))
        unknown = await ask(settings, lambda c: c.request("wait", {"event_id": new_event_id(),
                                                                   "timeout_s": 0.2}))  # fmt: skip
        dead = await ask(settings, lambda c: c.request("wait", {"event_id": dead_id}))
        with pytest.raises(DeadLetteredError) as raised:
            await ask(settings, lambda c: c.wait_for_event(dead_id, 1))
        with pytest.raises(RequestFailedError) as query_dead:
            await ask(settings, lambda c: c.query("active-trades", wait_for=dead_id))
        with pytest.raises(RequestFailedError) as query_late:
            await ask(settings, lambda c: c.query("pnl", wait_for=new_event_id(),
                                                  wait_timeout_s=0.2))  # fmt: skip
        with pytest.raises(RequestFailedError) as too_long:
            await ask(settings, lambda c: c.request("wait", {"event_id": good_id,
                                                             "timeout_s": 31}))  # fmt: skip
    assert committed is True
    assert unknown["committed"] is False
    assert unknown["dead_lettered"] is False
    assert unknown["waited_s"] >= 0.2
    assert dead["committed"] is False
    assert dead["dead_lettered"] is True
    assert dead["reason"].startswith("invalid event: ")
    assert "symbol" in dead["reason"]
    assert raised.value.reason == dead["reason"]
    assert query_dead.value.code == "dead_lettered"
    assert dead_id in query_dead.value.message
    assert query_late.value.code == "wait_timeout"
    assert "not committed within 0.2s" in query_late.value.message
    assert too_long.value.code == "bad_args"
    assert "timeout_s" in too_long.value.message


async def test_a_stopping_worker_is_not_held_up_by_a_long_wait(
    settings: Settings, sync_redis: redis.Redis
) -> None:
    channel = request_channel(settings.stream, settings.group)
    keys = [REPLY_PREFIX + uuid.uuid4().hex for _ in range(2)]
    waiting = {"id": "w1", "command": "wait", "reply_to": keys[0],
               "args": {"event_id": new_event_id(), "timeout_s": 30}}  # fmt: skip
    async with running_worker(settings):
        await worker_listening(settings)
        sync_redis.publish(channel, json.dumps(waiting))
        ping = {"id": "p1", "command": "ping", "args": {}, "reply_to": keys[1]}
        sync_redis.publish(channel, json.dumps(ping))  # answered after the wait began
        await wait_for(lambda: sync_redis.llen(keys[1]) == 1, what="the ping reply")
        stopping = anyio.current_time()
    assert anyio.current_time() - stopping < 3
    assert sync_redis.llen(keys[0]) == 0  # the wait was cut short, not answered late
