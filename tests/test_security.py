"""Nobody in who does not belong: Redis with a password, an ACL user and TLS; secrets never
shown; files readable by their owner only."""

from __future__ import annotations

import json
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
from contracts.channelauth import ChannelKeyError
from contracts.client import REPLY_PREFIX, Client, request_channel
from tests.helpers import (
    WorkerProcess,
    cli,
    count,
    make_settings,
    running_worker,
    wait_for,
    worker_listening,
)
from worker.embedded import EmbeddedRedis, find_redis_server, free_port
from worker.ops.health import heartbeat_key
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
    assert errors, refused.stderr
    assert errors[0].startswith("error: Redis refused this worker"), refused.stderr
    assert "Traceback" not in refused.stderr
    # It never started: no lease to release, no "stopped" line with counters.
    assert "writer lease" not in refused.stderr
    assert " stopped: " not in refused.stderr
    logged = out + refused.stdout + refused.stderr
    print(f"\n{len(logged.splitlines())} lines of worker output checked for the password")
    assert "committed 1 events" in out
    assert "stopped" in out
    assert SECRET not in logged
    assert "nope" not in logged


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
    assert len(modes) == 4
    assert set(modes.values()) == {"0o600"}
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


# -- the Redis password outside the URL (issue 14) ---------------------------------------


@pytest.mark.parametrize("source", ["env", "file"])
async def test_redis_password_from_env_or_file_is_used_and_config_names_only_its_source(
    locked_redis: EmbeddedRedis, tmp_path: Path, names: dict[str, str],
    monkeypatch: pytest.MonkeyPatch, source: str,
) -> None:  # fmt: skip
    url = f"redis://127.0.0.1:{locked_redis.port}/0"  # no password: nothing to see in `ps`
    if source == "env":
        monkeypatch.setenv("TRADESCRIBE_REDIS_PASSWORD", SECRET)
        expected = "env TRADESCRIBE_REDIS_PASSWORD"
    else:
        secret_file = tmp_path / "redis-password"
        secret_file.write_text(SECRET + "\n")
        secret_file.chmod(0o600)
        monkeypatch.setenv("TRADESCRIBE_REDIS_PASSWORD_FILE", str(secret_file))
        expected = f"file {secret_file}"
    s = make_settings(tmp_path / "scribe.db", url, names)
    where = ["--redis-url", url, "--stream", s.stream, "--group", s.group]
    async with running_worker(s):
        with Publisher(s.redis_url, source="bot-pw", stream=s.stream, spool=False) as pub:
            pub.publish("audit.event", action="login")
        await wait_for(lambda: count(s.db, "events") == 1, what="the event")
        await worker_listening(s)
        status = await cli("status", "--json", *where)
    shown = await cli("config", "--json", "--redis-url", url)
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["committed_events"] == 1
    values = json.loads(shown.stdout)
    assert values["redis_password_source"] == expected
    assert values["redis_url"] == f"redis://:***@127.0.0.1:{locked_redis.port}/0"
    assert SECRET not in shown.stdout + status.stdout


async def test_redis_password_given_twice_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRADESCRIBE_REDIS_PASSWORD", SECRET)
    shown = await cli("config", "--redis-url", f"redis://:{SECRET}@127.0.0.1:1/0")
    assert shown.exit_code == 1
    assert "the Redis password is given twice" in str(shown.exception)
    assert SECRET not in shown.output + str(shown.exception)


# -- the channel key when none is configured (issue 14) ------------------------------------


async def test_without_a_key_the_worker_makes_one_beside_its_database_for_its_owner_only(
    tmp_path: Path, redis_url: str, names: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRADESCRIBE_CHANNEL_KEY")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no tradescribe.db.channel-key here
    s = make_settings(tmp_path / "scribe.db", redis_url, names)
    where = ["--redis-url", redis_url, "--stream", s.stream, "--group", s.group]
    old = os.umask(0o022)
    try:
        async with running_worker(s):
            await worker_listening(s)
            key_file = Path(f"{s.db}.channel-key")
            mode = oct(stat.S_IMODE(key_file.stat().st_mode))
            without_db = await cli("ping", *where)
            monkeypatch.setenv("TRADESCRIBE_DB", str(s.db))  # the worker's host and user
            beside_db = await cli("ping", *where)
            checked = await cli("check", *where)
    finally:
        os.umask(old)
    assert mode == "0o600"
    assert len(key_file.read_text().strip()) == 64
    assert beside_db.exit_code == 0, beside_db.output
    assert "pong from" in beside_db.stdout, beside_db.output
    assert checked.exit_code == 0, checked.output
    assert without_db.exit_code == 1
    assert isinstance(without_db.exception, ChannelKeyError)
    assert "no channel key" in str(without_db.exception)
    with pytest.raises(ChannelKeyError, match="TRADESCRIBE_CHANNEL_KEY"):
        Client(redis_url, stream=s.stream, group=s.group)


# -- the ACL recipe in deploy/redis-acl.conf (issue 14) -------------------------------------

ACL_FILE = Path(__file__).resolve().parent.parent / "deploy" / "redis-acl.conf"


@pytest.fixture
def acl_user(redis_server: EmbeddedRedis, names: dict[str, str]) -> Iterator[Callable[[str], str]]:
    """``make(role)``: the recipe's user for ``role`` on the suite's redis-server (with
    this test's stream and a test password), and its URL; removed afterwards."""
    admin = redis.Redis(port=redis_server.port)
    created: list[str] = []

    def make(role: str) -> str:
        lines = [line.split() for line in ACL_FILE.read_text().splitlines()]
        words = next(w for w in lines if w[:2] == ["user", f"tradescribe-{role}"])
        rules = [f">{SECRET}" if w.startswith(">") else w for w in words[2:]]
        rules = [w.replace("tradescribe:events", names["stream"]) for w in rules]
        name = f"tradescribe-{role}-{names['group']}"
        admin.execute_command("ACL", "SETUSER", name, *rules)
        created.append(name)
        return f"redis://{name}:{SECRET}@127.0.0.1:{redis_server.port}/0"

    yield make
    for name in created:
        admin.acl_deluser(name)
    admin.close()


async def test_the_bot_acl_recipe_allows_xadd_and_nothing_else(
    acl_user: Callable[[str], str], settings: Settings, sync_redis: redis.Redis
) -> None:
    bot_url = acl_user("bot")
    with Publisher(bot_url, source="acl-bot", stream=settings.stream, spool=False) as pub:
        event_id = pub.publish("audit.event", action="x")
    [(_, fields)] = sync_redis.xrange(settings.stream)
    assert event_id in fields[b"event"].decode()
    sync_redis.xgroup_create(settings.stream, settings.group, id="0")
    channel = request_channel(settings.stream, settings.group)
    beat = heartbeat_key(settings.stream, settings.group)
    bot = redis.Redis.from_url(bot_url)
    refused = {
        "XREADGROUP": lambda: bot.xreadgroup(settings.group, "c", {settings.stream: ">"}),
        "XRANGE": lambda: bot.xrange(settings.stream),
        "SUBSCRIBE": lambda: bot.execute_command("SUBSCRIBE", channel),
        "PUBLISH": lambda: bot.publish(channel, "{}"),
        "GET heartbeat": lambda: bot.get(beat),
        "SET heartbeat": lambda: bot.set(beat, "{}"),
        "LPUSH reply": lambda: bot.lpush(REPLY_PREFIX + "0" * 32, "{}"),
        "XTRIM": lambda: bot.xtrim(settings.stream, maxlen=0),
        "DEL": lambda: bot.delete(settings.stream),
        "XADD elsewhere": lambda: bot.xadd("other:stream", {"event": "{}"}),
    }
    for what, call in refused.items():
        try:
            call()
        except redis.exceptions.NoPermissionError:
            continue
        pytest.fail(f"the bot user could {what}")
    bot.close()
    assert sync_redis.xlen(settings.stream) == 1


async def test_the_worker_and_ops_acl_recipes_run_the_worker_status_and_check(
    acl_user: Callable[[str], str], settings: Settings
) -> None:
    worker_url, ops_url = acl_user("worker"), acl_user("ops")
    s = make_settings(settings.db, worker_url, {k: getattr(settings, k) for k in
                      ("stream", "group", "consumer")}, heartbeat_interval_s=0.05)  # fmt: skip
    where = ["--redis-url", ops_url, "--stream", s.stream, "--group", s.group]
    async with running_worker(s):
        with Publisher(acl_user("bot"), source="b", stream=s.stream, spool=False) as pub:
            pub.publish("audit.event", action="x")
        await wait_for(lambda: count(s.db, "events") == 1, what="the event")
        await worker_listening(s)
        status = await cli("status", "--json", *where)
        ops = redis.Redis.from_url(ops_url)
        await wait_for(lambda: ops.get(heartbeat_key(s.stream, s.group)), what="a heartbeat")
        checked = await cli("check", *where)
        with pytest.raises(redis.exceptions.NoPermissionError):
            ops.set(heartbeat_key(s.stream, s.group), "{}")
        with pytest.raises(redis.exceptions.NoPermissionError):
            ops.xadd(s.stream, {"event": "{}"})
        ops.close()
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["committed_events"] == 1
    assert checked.exit_code == 0, checked.output
