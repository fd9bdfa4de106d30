"""PostgreSQL as the store: the write path's guarantees, on a server the suite starts
(tests/pgfix.py; skipped, with the reason, where none can start)."""

from __future__ import annotations

from typing import Any

import anyio
import asyncpg
import pytest
import redis

from contracts import Publisher
from tests.conftest import make_settings, pending, running_worker, wait_for
from tests.pgfix import create_database, postgres_admin_url
from worker.settings import Settings

__all__ = ["postgres_admin_url"]  # the fixture, for the tests below
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
    return int((await pg_fetch(url, f"SELECT count(*) FROM {table}"))[0][0])


async def wait_count(url: str, table: str, n: int, timeout: float = 30.0) -> None:
    """Poll until ``table`` holds ``n`` rows; fail after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while (have := await pg_count(url, table)) != n:
            assert have < n, f"{table} holds {have} rows, more than {n}"
            await anyio.sleep(0.05)


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
