"""The request channel: a real worker answers, bad requests get error replies."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import anyio
import pytest
import redis

from contracts.client import Client, request_channel
from contracts.errors import NoWorkerError, RedisUnreachableError, RequestFailedError
from tests.conftest import make_settings, running_worker, worker_listening
from worker.embedded import EmbeddedRedis, find_redis_server, free_port
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
    assert "ping" in err.value.message and "status" in err.value.message
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
