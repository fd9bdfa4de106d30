"""``tradescribe serve --remote``: the same answers as on the worker's host, asked of
a real worker process over the request channel, with replies verified.

One seeded database (tests/querydata.py: bot-a on ACC-1, bot-b on ACC-2), one real
``tradescribe worker`` on it, and two real ``serve`` processes sharing one token
file: one reading the file (``--db``), one asking the worker (``--remote``).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from contracts import AsyncPublisher
from contracts.channelauth import reply_header, sign
from contracts.client import Client, request_channel
from contracts.errors import RequestFailedError
from tests.helpers import WorkerProcess, assert_one_clear_line, make_settings, wait_for
from tests.helpers import tradescribe as _tradescribe
from tests.querydata import seeded
from tests.servefix import ServeProcess, free_port, http, serve_process, token
from tests.test_serve import PARAMS, TENANT_A_MARKERS, read_stream
from worker.embedded import EmbeddedRedis
from worker.settings import Settings

__all__ = ["serve_process"]
tradescribe = partial(_tradescribe, columns=200, channel_key=True)
# What differs between two answers asked a moment apart: the clock, and the
# pipeline's heartbeat (read from Redis by each server itself, not from the file).
VOLATILE = {"now", "last_commit_age_s", "pipeline"}


def steady(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: steady(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [steady(v) for v in value]
    return value


def remote_args(s: Settings, *extra: str) -> list[str]:
    return ["--remote", "--redis-url", s.redis_url, "--stream", s.stream, "--group", s.group,
            *extra]  # fmt: skip


def worker_answers(s: Settings) -> None:
    """Wait until the worker answers on its channel (it is up and subscribed)."""
    deadline = time.monotonic() + 30
    with Client(s.redis_url, stream=s.stream, group=s.group, timeout_s=1) as client:
        while True:
            try:
                client.ping()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@dataclass
class Pair:
    settings: Settings
    tokens: Path
    local: str
    remote: str
    admin: str
    a: str
    b: str

    def both(self, path: str, who: str, **params: Any) -> tuple[Any, Any]:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        suffix = f"{path}{'?' + query if query else ''}"
        return http(self.local + suffix, who), http(self.remote + suffix, who)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, redis_server: EmbeddedRedis) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("remote")
    tag = uuid.uuid4().hex[:10]
    names = {"stream": f"test:{tag}:events", "group": f"g-{tag}", "consumer": f"c-{tag}"}
    settings = make_settings(tmp / "scribe.db", redis_server.url, names)
    anyio.run(seeded, settings)
    worker = WorkerProcess(settings, tmp / "worker.log").start()
    started: list[ServeProcess] = []
    try:
        worker_answers(settings)
        tokens = tmp / "tokens.db"
        secrets = {
            "admin": token(tokens, "admin", admin=True),
            "a": token(tokens, "tenant-a", "ACC-1"),
            "b": token(tokens, "tenant-b", "ACC-2"),
        }
        named = ["--redis-url", settings.redis_url, "--stream", settings.stream,
                 "--group", settings.group]  # fmt: skip
        started.append(ServeProcess(settings.db, tokens, tmp / "local.log", *named))
        started.append(ServeProcess(None, tokens, tmp / "remote.log", *remote_args(settings)))
        yield Pair(settings, tokens, started[0].url, started[1].url, **secrets)
    finally:
        for proc in started:
            proc.stop()
        worker.stop()


def get_paths(pair: Pair) -> list[tuple[str, list[str]]]:
    doc = http(f"{pair.remote}/api/openapi.json", pair.admin).json()
    return [
        (path, [p["name"] for p in ops["get"].get("parameters", [])])
        for path, ops in doc["paths"].items()
        if "get" in ops and path != "/api/v1/events/stream"
    ]


def test_every_get_route_answers_remotely_what_it_answers_locally(pair: Pair) -> None:
    paths = get_paths(pair)
    assert len(paths) >= 12 + 4 + 4  # the queries, seed 002's routes, dashboard, bots, ...
    compared = 0
    for path, names in paths:
        params = {k: v for k, v in PARAMS.items() if k in names}
        for who in (pair.admin, pair.a, pair.b):
            for extra in ({}, {"account": "ACC-2"}, {"tz": "Europe/Berlin"}):
                extra = {k: v for k, v in extra.items() if k in names}
                formats = ("json", "csv") if "format" in names else ("json",)
                for fmt in formats:
                    args = {**params, **extra, **({"format": fmt} if fmt == "csv" else {})}
                    local, remote = pair.both(path, who, **args)
                    assert remote.status == local.status, (path, args, remote.text)
                    if fmt == "csv":
                        assert remote.text == local.text, (path, args)
                    else:
                        assert steady(remote.json()) == steady(local.json()), (path, args)
                    compared += 1
    assert compared >= 150
    # the admin's pipeline strip is there too, from the worker's signed heartbeat
    health = http(f"{pair.remote}/api/v1/health", pair.admin).json()
    assert health["pipeline"]["ok"] is True, health["pipeline"]


def test_a_tenant_sees_no_other_tenants_data_remotely(pair: Pair) -> None:
    seen_by_admin = 0
    for path, names in get_paths(pair):
        params = {k: v for k, v in PARAMS.items() if k in names}
        for extra in ({}, {"account": "ACC-1"}, {"source": "bot-a"}):
            extra = {k: v for k, v in extra.items() if k in names}
            reply = http(f"{pair.remote}{path}?" + "&".join(
                f"{k}={v}" for k, v in {**params, **extra}.items()), pair.b)  # fmt: skip
            leaked = [m for m in TENANT_A_MARKERS if m in reply.text]
            assert not leaked, (path, extra, leaked)
        admin = http(f"{pair.remote}{path}?" + "&".join(f"{k}={v}" for k, v in params.items()),
                     pair.admin).text  # fmt: skip
        seen_by_admin += any(m in admin for m in TENANT_A_MARKERS)
    assert seen_by_admin >= 10  # the same requests carry tenant A's data for the admin
    theirs = http(f"{pair.remote}/api/v1/trade?trade_id=T2", pair.b)
    missing = http(f"{pair.remote}/api/v1/trade?trade_id=T9", pair.b)
    assert theirs.status == missing.status == 404
    assert theirs.text.replace("T2", "T9") == missing.text
    assert http(f"{pair.remote}/api/v1/trade?trade_id=T2", pair.a).status == 200
    assert http(f"{pair.remote}/api/v1/dead-letters", pair.b).status == 403


def test_a_query_scope_on_the_channel_narrows_and_never_widens(pair: Pair) -> None:
    s = pair.settings
    with Client(s.redis_url, stream=s.stream, group=s.group, timeout_s=5) as client:
        everything = client.query("history")
        assert {r["account"] for r in everything["rows"]} == {"ACC-1", "ACC-2"}
        b_only = client.query("history", scope={"accounts": ["ACC-2"], "sources": []})
        assert {r["account"] for r in b_only["rows"]} == {"ACC-2"}
        # a filter for another account inside the scope finds nothing, not ACC-1's trades
        widened = client.query("history", {"account": "ACC-1"}, scope={"accounts": ["ACC-2"]})
        assert widened["rows"] == []
        assert widened["summary"]["count"] == 0
        with pytest.raises(RequestFailedError) as empty:
            client.query("history", scope={"accounts": []})
        assert empty.value.code == "bad_args"
        with pytest.raises(RequestFailedError) as bad:
            client.request("bots", {"scope": {"accounts": ["ACC-2"], "admin": True}})
        assert bad.value.code == "bad_args"  # a scope has no switch that widens it


def start_remote(serve_process: Any, s: Settings, tokens: Path, *extra: str) -> ServeProcess:
    return serve_process(None, tokens, *remote_args(s, *extra))  # type: ignore[no-any-return]


async def test_the_live_stream_announces_a_commit_in_remote_mode(
    settings: Settings, tmp_path: Path, serve_process: Any, worker_process: Any
) -> None:
    worker_process(settings)
    await anyio.to_thread.run_sync(worker_answers, settings)
    tokens = tmp_path / "tokens.db"
    secret = token(tokens, "b", "ACC-2")
    proc = start_remote(serve_process, settings, tokens)
    seen: list[dict[str, Any]] = []
    stop = threading.Event()
    reader = threading.Thread(target=read_stream, args=(proc.url, secret, stop, seen), daemon=True)
    reader.start()
    await wait_for(lambda: seen, what="the stream says hello")
    published = {}
    for account in ("ACC-1", "ACC-2"):
        async with AsyncPublisher(settings.redis_url, source=f"bot-{account}", account=account,
                                  stream=settings.stream) as pub:  # fmt: skip
            published[account] = time.monotonic()
            await pub.publish("journal.entry", text=f"live on {account}")
    await wait_for(lambda: any(e.get("account") == "ACC-2" for e in seen), timeout=10,
                   what="ACC-2's commit on the remote stream")  # fmt: skip
    took = time.monotonic() - published["ACC-2"]
    print(f"publish to remote stream: {took * 1000:.0f} ms")
    stop.set()
    commits = [e for e in seen if "seq" in e]
    assert [e["account"] for e in commits] == ["ACC-2"]
    assert commits[0]["type"] == "journal.entry"
    # the dashboard heard of it too, and answers at least that commit
    dash = http(f"{proc.url}/api/v1/dashboard?min_seq={commits[0]['seq']}", secret).json()
    assert dash["health"]["events"] == 1
    assert dash["whoami"]["name"] == "b"


async def test_post_events_works_in_remote_mode(
    settings: Settings, tmp_path: Path, serve_process: Any, worker_process: Any
) -> None:
    worker_process(settings)
    await anyio.to_thread.run_sync(worker_answers, settings)
    tokens = tmp_path / "tokens.db"
    publisher = token(tokens, "hook", "ACC-9", sources=["hook-bot"], publish=True)
    reader = token(tokens, "reader", "ACC-9")
    proc = start_remote(serve_process, settings, tokens)
    event = {"type": "trade.opened", "data": {"trade_id": "W1", "symbol": "BTCUSDT",
             "side": "buy", "quantity": "0.5", "entry_price": "43000.50"}}  # fmt: skip
    posted = http(f"{proc.url}/api/v1/events", publisher, method="POST", body=event)
    assert posted.status == 200, posted.text

    def stored() -> list[dict[str, Any]]:
        return list(http(f"{proc.url}/api/v1/active-trades", reader).json()["rows"])

    rows = await wait_for(stored, what="the posted trade, read back through the worker")
    assert [(r["trade_id"], r["source"], r["entry_price"]) for r in rows] == [
        ("W1", "hook-bot", 43000.5)
    ]


def assert_503_one_line(url: str, secret: str, *needles: str) -> None:
    for path in ("/api/v1/pnl", "/api/v1/dashboard", "/api/v1/health", "/api/trades"):
        started = time.monotonic()
        reply = http(url + path, secret, timeout=20)
        assert reply.status == 503, (path, reply.text)
        message = reply.json()["error"]
        assert "\n" not in message
        assert "Traceback" not in reply.text
        for needle in needles:
            assert needle in message, message
        assert time.monotonic() - started < 8, path  # an answer, not a hang


def test_no_worker_answers_503_with_a_one_line_reason(
    settings: Settings, tmp_path: Path, serve_process: Any
) -> None:
    tokens = tmp_path / "tokens.db"
    secret = token(tokens, "admin", admin=True)
    proc = start_remote(serve_process, settings, tokens)  # no worker on this group
    assert "no worker is listening" in proc.log.read_text()  # said at start, not later
    assert_503_one_line(proc.url, secret, "no worker is listening", settings.group)


def test_redis_down_answers_503_with_a_one_line_reason(
    tmp_path: Path, serve_process: Any, settings: Settings
) -> None:
    tokens = tmp_path / "tokens.db"
    secret = token(tokens, "admin", admin=True)
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    proc = serve_process(None, tokens, "--remote", "--redis-url", nowhere,
                         "--stream", settings.stream, "--worker-timeout", "2")  # fmt: skip
    assert_503_one_line(proc.url, secret, "cannot reach Redis")


def forger(s: Settings, stop: threading.Event, answered: list[str]) -> None:
    """Answers every request on the channel: unsigned, and signed with another key."""
    client = redis.Redis.from_url(s.redis_url, decode_responses=True)
    pubsub = client.pubsub()
    pubsub.subscribe(request_channel(s.stream, s.group))
    wrong = b"not-the-workers-key-" + uuid.uuid4().hex.encode()
    try:
        while not stop.is_set():
            message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is None:
                continue
            request = json.loads(message["data"])
            value = {"value": [{"id": "FORGED-T1"}], "rows": [{"source": "FORGED"}], "seq": 99}
            text = json.dumps({"id": request["id"], "ok": True, "result": value})
            header = reply_header(request["id"], request["command"], request["reply_to"])
            client.lpush(request["reply_to"], text, sign(wrong, header, text))
            answered.append(request["command"])
    finally:
        pubsub.close()
        client.close()


def test_a_forged_reply_is_refused(settings: Settings, tmp_path: Path, serve_process: Any) -> None:
    stop, answered = threading.Event(), []
    thread = threading.Thread(target=forger, args=(settings, stop, answered), daemon=True)
    thread.start()
    try:
        anyio.run(wait_for, lambda: thread.is_alive(), 5.0, "the forger listens")
        tokens = tmp_path / "tokens.db"
        secret = token(tokens, "admin", admin=True)
        proc = start_remote(serve_process, settings, tokens, "--worker-timeout", "1")
        reply = http(f"{proc.url}/api/trades", secret)
        assert reply.status == 503, reply.text
        assert "FORGED" not in reply.text
        assert "forged" in reply.json()["error"]
        assert "seed" in answered  # it was asked, and answered, and not believed
    finally:
        stop.set()
        thread.join(5)


def test_wrong_combinations_are_one_clear_line(tmp_path: Path, redis_url: str) -> None:
    tokens = tmp_path / "tokens.db"
    cases = [
        (["--remote", "--db", tmp_path / "x.db", "--redis-url", redis_url, "--tokens", tokens],
         "drop --db"),
        (["--remote", "--tokens", tokens], "--remote needs --redis-url"),
        (["--remote", "--redis-url", redis_url], "give --tokens FILE"),
    ]  # fmt: skip
    for args, needle in cases:
        assert_one_clear_line(tradescribe("serve", *args), 1, needle)
    keyless = _tradescribe("serve", "--remote", "--redis-url", redis_url, "--tokens", tokens)
    assert_one_clear_line(keyless, 1, "TRADESCRIBE_CHANNEL_KEY")


def test_token_commands_need_no_event_database(tmp_path: Path) -> None:
    """On the serve host of --remote there is no database: --tokens (or TRADESCRIBE_TOKENS)
    is all ``token`` needs, even where the settings name a PostgreSQL database."""
    tokens = tmp_path / "serve" / "tokens.db"
    tokens.parent.mkdir()
    env = {"TRADESCRIBE_DB": "postgresql://nobody@127.0.0.1:1/none",
           "TRADESCRIBE_TOKENS": str(tokens)}  # fmt: skip
    made = tradescribe("token", "create", "--name", "ops", "--account", "ACC-1", env=env)
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("tsk_")
    listed = tradescribe("token", "list", "--json", env=env)
    assert [t["name"] for t in json.loads(listed.stdout)] == ["ops"]
    assert list(tmp_path.rglob("*.db")) == [tokens]  # no event database was made


async def test_a_worker_that_stops_is_503_and_answers_again_when_back(
    settings: Settings, tmp_path: Path, serve_process: Any, worker_process: Any
) -> None:
    first = worker_process(settings)
    await anyio.to_thread.run_sync(worker_answers, settings)
    tokens = tmp_path / "tokens.db"
    secret = token(tokens, "admin", admin=True)
    proc = start_remote(serve_process, settings, tokens)
    url = f"{proc.url}/api/v1/health"
    assert http(url, secret).status == 200
    first.stop()
    gone = http(url, secret)
    assert gone.status == 503
    assert "no worker is listening" in gone.json()["error"]
    worker_process(settings, log_name="worker-2.log")
    await anyio.to_thread.run_sync(worker_answers, settings)
    back = http(url, secret)
    assert back.status == 200, back.text
    assert back.json()["schema_version"] >= 5
