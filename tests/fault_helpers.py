"""Helpers for the fault tests: a Redis this test alone owns, fast bulk publishing."""

from __future__ import annotations

import contextlib
import datetime as dt
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from contracts.events import WIRE_FIELD, build_event, to_wire
from contracts.ids import new_event_id
from worker.embedded import EmbeddedRedis, find_redis_server


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A redis-server (AOF on) on a fixed free port, so it can be stopped and restarted."""
    server = EmbeddedRedis(
        find_redis_server("system"), directory=tmp_path / "redis", appendonly=True
    )
    server.start()
    yield server
    server.cleanup()


def wire_events(source: str, n: int, start: int = 0) -> list[str]:
    """``n`` valid trade.opened events of one source, as wire JSON, numbered in data."""
    now = dt.datetime.now(dt.UTC)
    template = to_wire(
        build_event(
            "trade.opened",
            {"trade_id": "T", "symbol": "BTCUSDT", "side": "buy", "quantity": "1",
             "entry_price": "100"},
            id=new_event_id(), ts=now, source=source, mode="paper",
        )
    )  # fmt: skip
    prefix, _, rest = template.partition('"id":"')
    old_id, _, rest = rest.partition('"')
    out = []
    for i in range(start, start + n):
        body = f'{prefix}"id":"{new_event_id()}"{rest}'
        out.append(body.replace('"trade_id":"T"', f'"trade_id":"{source}-{i}"'))
    del old_id
    return out


def bulk_publish(client: redis.Redis, stream: str, bodies: list[str], chunk: int = 2000) -> int:
    """XADD pre-built wire JSON through a pipeline; returns how many were sent."""
    for start in range(0, len(bodies), chunk):
        pipe = client.pipeline(transaction=False)
        for body in bodies[start : start + chunk]:
            pipe.xadd(stream, {WIRE_FIELD: body})
        pipe.execute()
    return len(bodies)


_HOLD_WRITE_LOCK = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()  # hold the lock until the test closes our stdin
con.execute("ROLLBACK")
"""


@contextlib.contextmanager
def foreign_write_lock(db: Path) -> Iterator[None]:
    """Another process holds the database's write lock for the duration of the block."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_WRITE_LOCK, str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()
