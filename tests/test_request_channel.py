"""The request channel: a real worker answers, bad requests get error replies."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from contracts import Publisher, new_event_id
from contracts.client import REPLY_PREFIX, Client, request_channel
from contracts.errors import (
    ForgedReplyError,
    NoWorkerError,
    RedisUnreachableError,
    RequestFailedError,
)
from tests.helpers import make_settings, running_worker, wait_for, worker_listening
from worker.embedded import EmbeddedRedis, find_redis_server, free_port
from worker.ops.responder import MAX_PER_CLIENT, MAX_SLOW_IN_HAND
from worker.settings import Settings


def _client(settings: Settings, **kw: object) -> Client:
    return Client(settings.redis_url, stream=settings.stream, group=settings.group, **kw)  # type: ignore[arg-type]


async def test_ping_is_answered_by_the_running_worker(settings: Settings) -> None:
    async with running_worker(settings):
        await worker_listening(settings)
        with _client(settings) as client:
            reply = await anyio.to_thread.run_sync(lambda: client.request("ping"))
    assert reply["pong"] is True
    assert reply["consumer"] == settings.consumer


async def test_unknown_command_gets_an_error_reply_and_the_worker_keeps_answering(
    settings: Settings,
) -> None:
    async with running_worker(settings):
        await worker_listening(settings)
        with _client(settings) as client:
            with pytest.raises(RequestFailedError) as err:
                await anyio.to_thread.run_sync(lambda: client.request("DROP TABLE events"))
            again = await anyio.to_thread.run_sync(lambda: client.request("ping"))
    assert err.value.code == "unknown_command"
    assert "ping" in err.value.message
    assert "status" in err.value.message
    assert again["pong"] is True


async def test_unexpected_arguments_get_a_bad_args_reply(settings: Settings) -> None:
    async with running_worker(settings):
        await worker_listening(settings)
        with _client(settings) as client, pytest.raises(RequestFailedError) as err:
            await anyio.to_thread.run_sync(lambda: client.request("status", {"sql": "SELECT 1"}))
    assert err.value.code == "bad_args"
    assert "sql" in err.value.message


async def test_reply_key_outside_the_reply_namespace_is_never_written(
    settings: Settings, sync_redis: redis.Redis
) -> None:
    channel = request_channel(settings.stream, settings.group)
    target = f"victim:{uuid.uuid4().hex}"
    good_key = f"tradescribe:reply:{uuid.uuid4().hex}"
    async with running_worker(settings):
        await worker_listening(settings)
        for body in (
            json.dumps({"id": "a1", "command": "ping", "args": {}, "reply_to": target}),
            b"\xff not json",
            json.dumps([1, 2]),
            json.dumps({"id": "a2", "command": "ping", "args": "x", "reply_to": good_key}),
        ):
            assert sync_redis.publish(channel, body) == 1
        reply = await anyio.to_thread.run_sync(lambda: sync_redis.blpop([good_key], timeout=5))
    assert sync_redis.exists(target) == 0
    assert reply is not None
    answer = json.loads(reply[1])
    assert answer["id"] == "a2"
    assert answer["ok"] is False
    assert answer["error"]["code"] == "bad_request"


async def test_reply_key_expires_within_a_minute(
    settings: Settings, sync_redis: redis.Redis
) -> None:
    channel = request_channel(settings.stream, settings.group)
    key = f"tradescribe:reply:{uuid.uuid4().hex}"
    async with running_worker(settings):
        await worker_listening(settings)
        body = json.dumps({"id": "x", "command": "ping", "args": {}, "reply_to": key})
        sync_redis.publish(channel, body)
        reply = await anyio.to_thread.run_sync(lambda: sync_redis.brpoplpush(key, key, timeout=5))
    assert reply is not None
    assert 0 < int(sync_redis.ttl(key)) <= 60


def test_no_worker_listening_raises_no_worker_error(settings: Settings) -> None:
    with _client(settings) as client, pytest.raises(NoWorkerError, match="no worker is listening"):
        client.request("ping")


def test_unreachable_redis_raises_a_distinct_error() -> None:
    client = Client(f"redis://127.0.0.1:{free_port()}/0", connect_timeout_s=0.5)
    with client, pytest.raises(RedisUnreachableError, match="cannot reach Redis"):
        client.request("ping")


async def test_worker_answers_again_after_a_redis_restart(
    tmp_path: Path, names: dict[str, str]
) -> None:
    first = EmbeddedRedis(find_redis_server(), directory=tmp_path / "redis", appendonly=True)
    first.start()
    second: EmbeddedRedis | None = None
    try:
        s = make_settings(tmp_path / "r.db", first.url, names)
        async with running_worker(s):
            await worker_listening(s)
            with _client(s) as client:
                before = await anyio.to_thread.run_sync(lambda: client.request("ping"))
            first.stop()
            second = EmbeddedRedis(
                first.binary, directory=tmp_path / "redis", appendonly=True, port=first.port
            )
            second.start()
            await worker_listening(s, timeout=20)
            with _client(s) as client:
                status = await anyio.to_thread.run_sync(lambda: client.request("status"))
    finally:
        first.cleanup()
        if second is not None:
            second.cleanup()
    assert before["pong"] is True
    assert status["last_error"] is not None
    assert status["last_error"].startswith(("redis unreachable", "request channel"))


# -- flooding (issue 14) ----------------------------------------------------------------

FLOOD = 3000


def _wait_request(n: int, channel_client: str) -> tuple[str, str]:
    """A ``wait`` of 30 s for an id nobody publishes: the slowest request there is."""
    reply_to = REPLY_PREFIX + uuid.uuid4().hex
    body = {"id": f"w{n}", "command": "wait", "reply_to": reply_to, "client": channel_client,
            "args": {"event_id": new_event_id(), "timeout_s": 30}}  # fmt: skip
    return reply_to, json.dumps(body)


def _reply(client: redis.Redis, key: str, timeout: float = 5) -> dict[str, object]:
    """The worker's reply in ``key`` (signature checked), or fail."""
    popped = client.blpop([key], timeout=timeout)
    assert popped is not None, f"no reply in {key} within {timeout} s"
    found = re.fullmatch(r'\{"sig":"[0-9a-f]{64}",(.*)', popped[1].decode(), re.DOTALL)
    assert found is not None, popped[1]
    reply: dict[str, object] = json.loads("{" + found.group(1))
    return reply


async def test_a_flood_of_waits_is_answered_busy_and_ping_and_status_still_answer(
    settings: Settings, sync_redis: redis.Redis
) -> None:
    channel = request_channel(settings.stream, settings.group)
    async with running_worker(settings):
        await worker_listening(settings)

        def flood() -> tuple[list[str], list[int], float]:
            started = time.perf_counter()
            keys, delivered = [], []
            for first in range(0, FLOOD, 500):  # a bounded loop, in pipelines of 500
                pipe = sync_redis.pipeline(transaction=False)
                for n in range(first, first + 500):
                    reply_to, body = _wait_request(n, f"attacker-{n}")  # a new client id each
                    keys.append(reply_to)
                    pipe.publish(channel, body)
                delivered += pipe.execute()
            return keys, delivered, time.perf_counter() - started

        keys, delivered, flood_s = await anyio.to_thread.run_sync(flood)
        with _client(settings, timeout_s=2.0) as client:
            ping_s = await anyio.to_thread.run_sync(client.ping)
            started = time.perf_counter()
            status = await anyio.to_thread.run_sync(client.status)
            status_s = time.perf_counter() - started
        last = await anyio.to_thread.run_sync(lambda: _reply(sync_redis, keys[-1]))
    print(f"\n{FLOOD} waits published in {flood_s:.2f} s; then ping {ping_s * 1000:.0f} ms, "
          f"status {status_s * 1000:.0f} ms; in hand {status['requests_in_hand']}, "
          f"refused busy {status['requests_refused_busy']}")  # fmt: skip
    assert set(delivered) == {1}
    assert ping_s < 2.0
    assert status_s < 2.0
    # The first MAX_SLOW_IN_HAND waits are in hand (waiting their 30 s); every later
    # one was answered "busy" at once, and nothing queues behind them.
    assert status["requests_in_hand"] == MAX_SLOW_IN_HAND + 1  # + the status request itself
    assert status["requests_refused_busy"] == FLOOD - MAX_SLOW_IN_HAND
    assert last["ok"] is False
    assert last["id"] == f"w{FLOOD - 1}"
    assert last["error"] == {"code": "busy", "message": last["error"]["message"]}  # type: ignore[index]
    assert "busy" in str(last["error"])


async def test_one_client_has_at_most_max_per_client_waits_in_hand(
    settings: Settings, sync_redis: redis.Redis
) -> None:
    channel = request_channel(settings.stream, settings.group)
    requests = [_wait_request(n, "greedy-bot") for n in range(MAX_PER_CLIENT + 5)]
    async with running_worker(settings):
        await worker_listening(settings)
        for _, body in requests:
            assert sync_redis.publish(channel, body) == 1
        over = [
            await anyio.to_thread.run_sync(lambda k=key: _reply(sync_redis, k))
            for key, _ in requests[MAX_PER_CLIENT:]
        ]
        within = [sync_redis.llen(key) for key, _ in requests[:MAX_PER_CLIENT]]
        with _client(settings) as client:  # another client is still served
            other = await anyio.to_thread.run_sync(
                lambda: client.wait_for_event(new_event_id(), timeout_s=0)
            )
    assert [r["error"]["code"] for r in over] == ["busy"] * 5  # type: ignore[index]
    assert "this client has 8 requests in hand" in over[0]["error"]["message"]  # type: ignore[index]
    assert within == [0] * MAX_PER_CLIENT  # still waiting, not refused
    assert other is False


# -- reply keys (issue 14) ----------------------------------------------------------------


async def test_reply_to_with_a_trailing_newline_is_never_written(
    settings: Settings, sync_redis: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="worker.ops.responder")
    channel = request_channel(settings.stream, settings.group)
    key = f"tradescribe:reply:{uuid.uuid4().hex}\n"
    async with running_worker(settings):
        await worker_listening(settings)
        for args in ({}, "not an object"):  # a well-formed request, and a bad_request
            body = json.dumps({"id": "nl", "command": "ping", "args": args, "reply_to": key})
            assert sync_redis.publish(channel, body) == 1
        await wait_for(
            lambda: (
                sync_redis.exists(key)
                or sum("without a valid reply_to" in r.message for r in caplog.records) == 2
            ),
            what="the requests to be dropped (or answered)",
        )
    assert sync_redis.exists(key) == 0


@pytest.mark.parametrize("kind", ["hash", "string", "zset"])
async def test_a_reply_never_writes_or_expires_a_key_of_another_type(
    settings: Settings, sync_redis: redis.Redis, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    caplog.set_level(logging.WARNING, logger="worker.ops.responder")
    channel = request_channel(settings.stream, settings.group)
    key = f"tradescribe:reply:{uuid.uuid4().hex}"
    {"hash": lambda: sync_redis.hset(key, "owner", "someone"),
     "string": lambda: sync_redis.set(key, "someone's"),
     "zset": lambda: sync_redis.zadd(key, {"someone": 1})}[kind]()  # fmt: skip
    before = sync_redis.dump(key)
    async with running_worker(settings):
        await worker_listening(settings)
        body = json.dumps({"id": "t1", "command": "ping", "args": {}, "reply_to": key})
        assert sync_redis.publish(channel, body) == 1
        await wait_for(
            lambda: any(key in r.getMessage() for r in caplog.records), what="the refused reply"
        )
    assert sync_redis.type(key).decode() == kind
    assert sync_redis.dump(key) == before
    assert sync_redis.ttl(key) == -1  # not expired either
    assert any(f"the key holds a {kind}" in r.getMessage() for r in caplog.records)


# -- forged and replayed replies (issue 14) ------------------------------------------------


class Forger:
    """Another subscriber on the request channel: answers every request at once with
    ``forge(request)`` (a reply text), before the worker can."""

    def __init__(self, url: str, channel: str, forge: Callable[[dict[str, Any]], str]) -> None:
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(channel)
        self.forge = forge
        self.pushed = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.stop = threading.Event()
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            message = self.pubsub.get_message(timeout=0.05)
            if message is not None:
                request = json.loads(message["data"])
                self.client.lpush(request["reply_to"], self.forge(request))
                self.pushed.set()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.pubsub.close()
        self.client.close()


def _forged_rows(request: dict[str, Any]) -> str:
    result = {"name": "active-trades", "columns": ["trade_id", "pnl"], "summary": None,
              "rows": [{"trade_id": "FAKE", "pnl": 1e6}], "sections": {}}  # fmt: skip
    return json.dumps({"id": request["id"], "ok": True, "result": result})


async def test_a_forged_query_reply_is_refused_and_the_workers_reply_returned(
    settings: Settings, sync_redis: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="contracts.client")
    channel = request_channel(settings.stream, settings.group)
    event_id = new_event_id()
    async with running_worker(settings):
        await worker_listening(settings)
        forger = Forger(settings.redis_url, channel, _forged_rows)
        try:
            await wait_for(lambda: int(sync_redis.pubsub_numsub(channel)[0][1]) == 2)
            with _client(settings, timeout_s=5.0) as client:
                async with anyio.create_task_group() as tg:
                    answer: dict[str, Any] = {}

                    async def ask() -> None:
                        answer.update(await anyio.to_thread.run_sync(lambda: client.query(
                            "active-trades", {"source": "bot-f"}, wait_for=event_id)))  # fmt: skip

                    tg.start_soon(ask)
                    # The forged reply is in the key before the worker can answer: the
                    # worker waits for an event that is published only now.
                    assert await anyio.to_thread.run_sync(forger.pushed.wait, 10)
                    with Publisher(settings.redis_url, source="bot-f", stream=settings.stream,
                                   spool=False) as pub:  # fmt: skip
                        pub.publish("trade.opened", id=event_id, trade_id="T1", symbol="BTCUSDT",
                                    side="buy", quantity="1", entry_price="100")  # fmt: skip
                assert [row["trade_id"] for row in answer["rows"]] == ["T1"]  # not FAKE
                assert client.refused_replies == 1
        finally:
            forger.close()
    assert any("refused a reply" in r.getMessage() for r in caplog.records)


def _replay_of(genuine: str) -> Callable[[dict[str, Any]], str]:
    """A genuine signed reply to another request, re-addressed to this one."""
    old_id = json.loads(re.sub(r'^\{"sig":"[0-9a-f]{64}",', "{", genuine))["id"]
    return lambda request: genuine.replace(old_id, request["id"])


@pytest.mark.parametrize("how", ["forged", "replayed"])
async def test_wait_for_event_is_not_fooled_by_a_forged_or_replayed_reply(
    settings: Settings, sync_redis: redis.Redis, how: str
) -> None:
    channel = request_channel(settings.stream, settings.group)
    async with running_worker(settings):  # a genuine "committed: true", for the replay
        await worker_listening(settings)
        with Publisher(settings.redis_url, source="b", stream=settings.stream) as pub:
            real_id = pub.publish("audit.event", action="x")
        key = REPLY_PREFIX + uuid.uuid4().hex
        ask = {"id": "real1", "command": "wait", "args": {"event_id": real_id}, "reply_to": key}
        sync_redis.publish(channel, json.dumps(ask))
        genuine = (await anyio.to_thread.run_sync(lambda: sync_redis.blpop([key], 10)))[1]
    assert b'"committed": true' in genuine
    forge = (
        _replay_of(genuine.decode())
        if how == "replayed"
        else lambda r: json.dumps({"id": r["id"], "ok": True, "result": {
            "event_id": r["args"]["event_id"], "committed": True, "dead_lettered": False}})
    )  # fmt: skip
    forger = Forger(settings.redis_url, channel, forge)  # and no worker now
    try:
        with _client(settings, timeout_s=1.0) as client, pytest.raises(ForgedReplyError) as err:
            await anyio.to_thread.run_sync(lambda: client.wait_for_event(new_event_id(), 0.5))
    finally:
        forger.close()
    assert forger.pushed.is_set()
    assert "1 unsigned or forged repl(ies) were refused" in str(err.value)
