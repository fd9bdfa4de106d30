"""Nobody in who does not belong: Redis with a password, an ACL user and TLS; secrets never
shown; files readable by their owner only."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from contracts import Publisher
from tests.conftest import WorkerProcess, count, make_settings, running_worker, wait_for
from worker.embedded import EmbeddedRedis, find_redis_server, free_port
from worker.settings import Settings

SECRET = "s3cr3t-Pa55word-do-not-log"
ACL_RULES = ["on", f">{SECRET}", "~*", "&*", "+@all", "-@admin", "-@dangerous", "+info"]


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A redis-server with a password on the default user and an ACL user ``scribe``."""
    server = EmbeddedRedis(find_redis_server("system"), directory=tmp_path / "redis")
    server.start()
    admin = redis.Redis(port=server.port)
    admin.acl_setuser("scribe", reset=True, enabled=True, passwords=[f"+{SECRET}"],
                      keys=["*"], channels=["*"],
                      commands=["+@all", "-@admin", "-@dangerous"])  # fmt: skip
    admin.config_set("requirepass", SECRET)
    admin.close()
    yield server
    server.cleanup()


def _url(server: EmbeddedRedis, user: str = "") -> str:
    return f"redis://{user}:{SECRET}@127.0.0.1:{server.port}/0"


@pytest.mark.parametrize("user", ["", "scribe"], ids=["requirepass", "acl-user"])
async def test_worker_and_publisher_work_with_a_password_and_with_an_acl_user(
    locked_redis: EmbeddedRedis, tmp_path: Path, names: dict[str, str], user: str
) -> None:
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=locked_redis.port).ping()  # no password, no entry
    s = make_settings(tmp_path / "scribe.db", _url(locked_redis, user), names)
    async with running_worker(s):
        with Publisher(s.redis_url, source="bot-sec", stream=s.stream, spool=False) as pub:
            pub.publish("trade.opened", trade_id="T1", symbol="BTCUSDT", side="buy",
                        quantity="1", entry_price="100")  # fmt: skip
        await wait_for(lambda: count(s.db, "events") == 1, what="the event behind a password")


async def test_secrets_never_appear_in_logs_or_settings_or_errors(
    locked_redis: EmbeddedRedis, tmp_path: Path, names: dict[str, str],
    worker_process: Callable[..., WorkerProcess],
) -> None:  # fmt: skip
    s = make_settings(tmp_path / "scribe.db", _url(locked_redis, "scribe"), names)
    assert SECRET not in str(s.public())
    env = {**WorkerProcess(s, tmp_path / "unused.log").env(), "TRADESCRIBE_LOG_LEVEL": "DEBUG"}
    # Into a file, not a pipe: at DEBUG (aiosqlite logs every statement twice) the
    # worker writes more than a pipe holds before its first commit, and would block.
    log_file = tmp_path / "debug.log"
    with log_file.open("w") as log_out:
        debug = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "worker"],
            env=env,
            stdout=log_out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        with Publisher(s.redis_url, source="bot-sec", stream=s.stream, spool=False) as pub:
            pub.publish("audit.event", action="login")
        await wait_for(lambda: count(s.db, "events") == 1, 30, "the event")
    finally:
        debug.send_signal(signal.SIGTERM)
        debug.wait(timeout=20)
    out = log_file.read_text()
    wrong = {**env, "TRADESCRIBE_REDIS_URL": _url(locked_redis, "scribe").replace(SECRET, "nope")}
    refused = subprocess.run([sys.executable, "-m", "worker.cli", "worker"], env=wrong,
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    assert refused.returncode == 1, refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert errors and errors[0].startswith("error: Redis refused this worker"), refused.stderr
    assert "Traceback" not in refused.stderr
    # It never started: no lease to release, no "stopped" line with counters.
    assert "writer lease" not in refused.stderr and " stopped: " not in refused.stderr
    logged = out + refused.stdout + refused.stderr
    print(f"\n{len(logged.splitlines())} lines of worker output checked for the password")
    assert "committed 1 events" in out and "stopped" in out
    assert SECRET not in logged and "nope" not in logged


async def test_database_wal_and_spool_files_are_readable_by_their_owner_only(
    settings: Settings, tmp_path: Path
) -> None:
    old = os.umask(0o022)  # the usual umask, which would make new files world-readable
    try:
        async with running_worker(settings):
            with Publisher(settings.redis_url, source="m", stream=settings.stream) as pub:
                pub.publish("audit.event", action="x")
            await wait_for(lambda: count(settings.db, "events") == 1)
            db_files = [settings.db, Path(f"{settings.db}-wal"), Path(f"{settings.db}-shm")]
            modes = {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in db_files}
        spool_dir = tmp_path / "spool"
        down = f"redis://127.0.0.1:{free_port()}/0"
        with Publisher(down, source="m", stream="s", spool_dir=spool_dir) as pub:
            pub.publish("audit.event", action="spooled")
            modes.update({f.name: oct(stat.S_IMODE(f.stat().st_mode))
                          for f in spool_dir.glob("*.spool")})  # fmt: skip
    finally:
        os.umask(old)
    print(f"\nfile modes: {modes}")
    assert len(modes) == 4 and set(modes.values()) == {"0o600"}
    assert oct(stat.S_IMODE(spool_dir.stat().st_mode)) == "0o700"


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[EmbeddedRedis, int, Path]]:
    """redis-server with a TLS port and a throwaway CA (trustme), or a skip saying why."""
    trustme = pytest.importorskip("trustme", reason="TLS test needs the trustme package")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certs = tmp_path / "certs"
    certs.mkdir()
    ca_file, cert_file, key_file = certs / "ca.pem", certs / "server.pem", certs / "server.key"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    tls_port = free_port()
    tls_args = ("--tls-port", str(tls_port), "--tls-cert-file", str(cert_file),
                "--tls-key-file", str(key_file), "--tls-ca-cert-file", str(ca_file),
                "--tls-auth-clients", "no")  # fmt: skip
    server = EmbeddedRedis(
        find_redis_server("system"), directory=tmp_path / "redis", extra_args=tls_args
    )
    try:
        server.start()
    except Exception as exc:
        pytest.skip(f"this redis-server cannot serve TLS ({str(exc).strip()[:200]})")
    yield server, tls_port, ca_file
    server.cleanup()


async def test_worker_and_publisher_work_over_tls(
    tls_redis: tuple[EmbeddedRedis, int, Path], tmp_path: Path, names: dict[str, str]
) -> None:
    _server, tls_port, ca_file = tls_redis
    url = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={ca_file}"
    with pytest.raises(redis.ConnectionError):  # without the CA, the certificate is refused
        redis.Redis.from_url(f"rediss://127.0.0.1:{tls_port}/0", socket_timeout=2).ping()
    s = make_settings(tmp_path / "scribe.db", url, names)
    async with running_worker(s):
        with Publisher(url, source="bot-tls", stream=s.stream, spool=False) as pub:
            pub.publish("trade.opened", trade_id="T1", symbol="BTCUSDT", side="buy",
                        quantity="1", entry_price="100")  # fmt: skip
        await wait_for(lambda: count(s.db, "events") == 1, what="the event over TLS")
