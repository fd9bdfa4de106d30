"""``tradescribe serve --db postgresql://...``: the same answers as on the SQLite file.

The history of tests/querydata.py is published once, into one stream; each engine's
real worker (a group of its own) stores those very events, one into a SQLite file, one
into a database of the suite's own PostgreSQL (tests/pgfix.py).
Three real ``serve`` processes share one token file: one reads the file, one reads
PostgreSQL, one (``--remote``) asks a worker that writes to PostgreSQL over the
request channel. Every GET route answers the same JSON on all three.
"""

from __future__ import annotations

import threading
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
from tests.helpers import assert_one_clear_line, make_settings, wait_for
from tests.helpers import tradescribe as _tradescribe
from tests.pgfix import create_database_sync
from tests.querydata import BOT_A, BOT_B, seeded, stored_events
from tests.servefix import ServeProcess, http, token
from tests.test_postgres import PgWorkerProcess
from tests.test_serve import PARAMS, TENANT_A_MARKERS, read_stream
from tests.test_serve_remote import VOLATILE, remote_args, worker_answers
from worker.embedded import EmbeddedRedis
from worker.settings import Settings
from worker.store import pgsql

tradescribe = partial(_tradescribe, columns=200, channel_key=True)
# What two databases written at different moments may not share: when each event was
# committed (and what follows from it); and what is each engine's own: the database's
# size, its schema version (PostgreSQL's frozen SQL counts from 1: `db version`), a dead
# letter's partition stream (a column of PostgreSQL's schema only, with partitions).
CLOCKED = {"committed_at", "last_commit_at", "received_at", "db_bytes", "schema_version",
           "stream"}  # fmt: skip


def same(value: Any) -> Any:
    """``steady``, also without the commit clocks of each engine's own run."""
    if isinstance(value, dict):
        return {k: same(v) for k, v in value.items() if k not in CLOCKED | VOLATILE}
    if isinstance(value, list):  # also a result's column names
        return [same(v) for v in value if not (isinstance(v, str) and v in CLOCKED)]
    return value


@dataclass
class Engines:
    pg: Settings
    tokens: Path
    sqlite: str  # serve --db FILE
    postgres: str  # serve --db postgresql://...
    remote: str  # serve --remote, asking the worker that writes to PostgreSQL
    admin: str
    a: str
    b: str
    bad_id: str  # a stream entry both workers dead-letter

    def get(self, base: str, path: str, who: str, **params: Any) -> Any:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return http(f"{base}{path}{'?' + query if query else ''}", who)


def _settings(db: Path | str, redis_url: str, tag: str, engine: str) -> Settings:
    names = {"stream": f"test:{tag}:events", "group": f"g-{tag}-{engine}",
             "consumer": f"c-{tag}-{engine}"}  # fmt: skip
    return make_settings(db, redis_url, names)  # type: ignore[arg-type]


async def _stored(s: Settings) -> None:
    total = len(BOT_A) + len(BOT_B)
    await wait_for(lambda: stored_events(s) == total, what="the stream's events in PostgreSQL")


def _named(s: Settings) -> list[str]:
    return ["--redis-url", s.redis_url, "--stream", s.stream, "--group", s.group]


@pytest.fixture(scope="module", name="e")
def engines(
    tmp_path_factory: pytest.TempPathFactory, redis_server: EmbeddedRedis, postgres_admin_url: str
) -> Iterator[Engines]:
    tmp = tmp_path_factory.mktemp("serve-pg")
    tag = uuid.uuid4().hex[:10]
    lite = _settings(tmp / "scribe.db", redis_server.url, tag, "sqlite")
    pg = _settings(create_database_sync(postgres_admin_url), redis_server.url, tag, "pg")
    assert pg.database_url is not None
    with redis.Redis.from_url(redis_server.url) as client:
        bad_id = client.xadd(lite.stream, {"event": "not an event"}).decode()
    anyio.run(seeded, lite)  # published once; the PostgreSQL worker reads the same stream
    tokens = tmp / "tokens.db"
    secrets = {
        "admin": token(tokens, "admin", admin=True),
        "a": token(tokens, "tenant-a", "ACC-1"),
        "b": token(tokens, "tenant-b", "ACC-2"),
    }
    worker = PgWorkerProcess(pg, tmp / "worker.log").start()
    started: list[ServeProcess] = []
    try:
        anyio.run(_stored, pg)
        worker_answers(pg)
        started.append(ServeProcess(lite.db, tokens, tmp / "sqlite.log", *_named(lite)))
        started.append(ServeProcess(pg.database_url, tokens, tmp / "pg.log", *_named(pg)))
        started.append(ServeProcess(None, tokens, tmp / "remote.log", *remote_args(pg)))
        urls = [p.url for p in started]
        yield Engines(pg, tokens, *urls, **secrets, bad_id=bad_id)
    finally:
        for proc in started:
            proc.stop()
        worker.stop()


def get_paths(e: Engines) -> list[tuple[str, list[str]]]:
    doc = http(f"{e.postgres}/api/openapi.json", e.admin).json()
    return [
        (path, [p["name"] for p in ops["get"].get("parameters", [])])
        for path, ops in doc["paths"].items()
        if "get" in ops and path != "/api/v1/events/stream"
    ]


def test_every_get_route_answers_on_postgresql_what_it_answers_on_sqlite(e: Engines) -> None:
    paths = get_paths(e)
    assert len(paths) >= 12 + 4 + 4  # the queries, seed 002's routes, dashboard, bots, ...
    compared = answered = 0
    for path, names in paths:
        params = {k: v for k, v in PARAMS.items() if k in names}
        for who in (e.admin, e.a, e.b):
            for extra in ({}, {"account": "ACC-2"}, {"tz": "Europe/Berlin"}):
                args = {**params, **{k: v for k, v in extra.items() if k in names}}
                lite = e.get(e.sqlite, path, who, **args)
                assert lite.status in (200, 403, 404), (path, args, lite.text)
                answered += lite.status == 200
                for base in (e.postgres, e.remote):
                    got = e.get(base, path, who, **args)
                    assert got.status == lite.status, (base, path, args, got.text)
                    assert same(got.json()) == same(lite.json()), (base, path, args)
                    compared += 1
    assert compared >= 100
    assert answered >= 50
    letters = e.get(e.postgres, "/api/v1/dead-letters", e.admin).json()["rows"]
    assert [(x["stream_id"], x["raw"]) for x in letters] == [(e.bad_id, "not an event")]
    health = e.get(e.postgres, "/api/v1/health", e.admin).json()
    assert health["schema_version"] == pgsql.SCHEMA_VERSION
    assert health["db_bytes"] > 0  # pg_database_size
    assert health["events"] > 0
    assert health["last_commit_at"]


def test_a_tenant_never_sees_another_tenants_data_on_postgresql(e: Engines) -> None:
    leaks_for_admin = 0
    for base in (e.postgres, e.remote):
        for path, names in get_paths(e):
            params = {k: v for k, v in PARAMS.items() if k in names}
            for extra in ({}, {"account": "ACC-1"}, {"source": "bot-a"}):
                extra = {k: v for k, v in extra.items() if k in names}
                for fmt in ("json", "csv") if "format" in names else ("json",):
                    reply = e.get(base, path, e.b, **params, **extra, format=fmt)
                    seen = [m for m in TENANT_A_MARKERS if m in reply.text]
                    assert not seen, (base, path, extra, fmt, seen, reply.text[:300])
            admin = e.get(base, path, e.admin, **params).text
            leaks_for_admin += any(m in admin for m in TENANT_A_MARKERS)
    assert leaks_for_admin >= 20  # the same requests carry A's data for the admin
    assert e.get(e.postgres, "/api/v1/dead-letters", e.b).status == 403
    assert "dead_letters" not in e.get(e.postgres, "/api/v1/health", e.b).json()


async def test_live_stream_announces_a_commit_on_postgresql(e: Engines) -> None:
    streams: dict[str, list[dict[str, Any]]] = {"b": [], "admin": [], "remote": []}
    stop = threading.Event()
    readers = [(e.postgres, e.b, streams["b"]), (e.postgres, e.admin, streams["admin"]),
               (e.remote, e.b, streams["remote"])]  # fmt: skip
    threads = [threading.Thread(target=read_stream, args=(url, who, stop, out), daemon=True)
               for url, who, out in readers]  # fmt: skip
    for t in threads:
        t.start()
    await wait_for(lambda: all(streams.values()), what="the streams open")
    before = e.get(e.postgres, "/api/v1/health", e.b).json()["events"]
    for source, account in (("bot-a", "ACC-1"), ("bot-b", "ACC-2")):
        async with AsyncPublisher(e.pg.redis_url, source=source, account=account,
                                  stream=e.pg.stream) as pub:  # fmt: skip
            await pub.publish("journal.entry", text=f"live from {source} on postgresql")
    await wait_for(lambda: len(streams["admin"]) >= 3, what="both commits on the admin's stream")
    await wait_for(lambda: len(streams["remote"]) >= 2, what="bot-b's commit, remotely")
    stop.set()
    assert [x["source"] for x in streams["admin"][1:3]] == ["bot-a", "bot-b"]
    assert [x["source"] for x in streams["b"][1:]] == ["bot-b"]
    assert [x["source"] for x in streams["remote"][1:]] == ["bot-b"]
    assert streams["b"][1]["type"] == "journal.entry"
    assert streams["b"][1]["seq"] == streams["remote"][1]["seq"]
    health = e.get(e.postgres, "/api/v1/health", e.b).json()  # the tally counts the new one
    assert health["events"] == before + 1


def test_serve_on_a_postgresql_url_needs_a_token_file() -> None:
    url = "postgresql://scribe@127.0.0.1:1/tradescribe"
    for args in (["serve", "--db", url], ["token", "list", "--db", url]):
        done = tradescribe(*args)
        assert_one_clear_line(done, 1, "is PostgreSQL", "--tokens FILE", "TRADESCRIBE_TOKENS")
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
