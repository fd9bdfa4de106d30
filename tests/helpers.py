"""Plain helpers the test modules share: waiting, reading the database, running the CLI,
publishing in bulk, and real processes (a worker, a lock holder). Fixtures live in
conftest.py; the history the read-side tests query is built in querydata.py."""

from __future__ import annotations

import configparser
import contextlib
import datetime as dt
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import redis
from typer.testing import CliRunner, Result

from contracts.events import WIRE_FIELD, build_event, to_wire
from contracts.ids import new_event_id
from contracts.redisclient import subscribers, sync_client
from worker.cli.app import app, main
from worker.consume import Worker
from worker.service import run_worker
from worker.settings import Settings
from worker.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "tradescribe.service"

# -- settings and a worker in this event loop ------------------------------------------


def make_settings(db: Path, redis_url: str, names: dict[str, str], **extra: Any) -> Settings:
    """Settings for a worker of this test: short timings, its own stream and group."""
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
    """Poll ``condition`` until it is truthy and return it; fail after ``timeout`` seconds.

    A sync test calls it as ``anyio.run(wait_for, condition, timeout, what)``."""
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


async def worker_listening(settings: Settings, timeout: float = 10.0) -> None:
    """Wait until a worker is subscribed to the request channel of ``settings``."""
    from contracts.client import request_channel

    channel = request_channel(settings.stream, settings.group)
    client = sync_client(settings.redis_url)  # a cluster's too
    try:
        await wait_for(
            lambda: subscribers(client, channel) > 0,
            timeout=timeout,
            what=f"a subscriber on {channel}",
        )
    finally:
        client.close()


# -- what is stored ---------------------------------------------------------------------


async def make_db(path: Path) -> None:
    """An empty database at the current schema, as the worker creates it."""
    store = await SqliteStore.open(path)
    try:
        await store.migrate()
    finally:
        await store.close()


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


def summary_from_rows(rows: list[dict[str, Any]]) -> tuple[Any, ...]:
    """count, wins, losses, gross profit, gross loss, best, worst, summed in Python."""
    pnl = [r["realized_pnl"] for r in rows if r["realized_pnl"] is not None]
    return (
        len(rows),
        sum(p > 0 for p in pnl),
        sum(p < 0 for p in pnl),
        round(sum(p for p in pnl if p > 0), 2),
        round(sum(p for p in pnl if p < 0), 2),
        max(pnl, default=None),
        min(pnl, default=None),
    )


def summary_shown(s: dict[str, Any]) -> tuple[Any, ...]:
    """A query's summary in the order of ``summary_from_rows``."""
    return (s["count"], s["wins"], s["losses"], s["gross_profit"], s["gross_loss"], s["best"],
            s["worst"])  # fmt: skip


# -- publishing in bulk -----------------------------------------------------------------


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
    _, _, rest = rest.partition('"')
    out = []
    for i in range(start, start + n):
        body = f'{prefix}"id":"{new_event_id()}"{rest}'
        out.append(body.replace('"trade_id":"T"', f'"trade_id":"{source}-{i}"'))
    return out


def bulk_publish(client: redis.Redis, stream: str, bodies: list[str], chunk: int = 2000) -> int:
    """XADD pre-built wire JSON through a pipeline; returns how many were sent."""
    for start in range(0, len(bodies), chunk):
        pipe = client.pipeline(transaction=False)
        for body in bodies[start : start + chunk]:
            pipe.xadd(stream, {WIRE_FIELD: body})
        pipe.execute()
    return len(bodies)


def publish_many(client: redis.Redis, stream: str, n: int, source: str = "bot-a") -> list[str]:
    """``n`` trade.opened events of ``source``, sent in pipelined chunks; returns their ids."""
    bodies = wire_events(source, n)
    bulk_publish(client, stream, bodies)
    return [json.loads(body)["id"] for body in bodies]


# -- the command line -------------------------------------------------------------------


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run_cli(*args: str) -> CliResult:
    """``tradescribe ARGS...`` through ``worker.cli.app.main`` in this process, as a user
    would run it (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = ["tradescribe", *args]
    code: Any = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = saved
    if code is None:
        code = 0
    return CliResult(code if isinstance(code, int) else 1, out.getvalue(), err.getvalue())


async def run_cli_in_thread(*args: str) -> CliResult:
    """``run_cli`` from an async test, so a worker in its event loop keeps running."""
    return await anyio.to_thread.run_sync(lambda: run_cli(*args))


async def cli(*args: str) -> Result:
    """The typer app invoked in a thread (typer's CliRunner: ``exit_code``, ``stdout``,
    ``stderr``, ``exception``), so a worker in the test's event loop keeps running."""
    runner = CliRunner()
    return await anyio.to_thread.run_sync(lambda: runner.invoke(app, list(args)))


def where_flags(s: Settings) -> list[str]:
    """The flags that point ``status``, ``ping`` or ``check`` at the worker of ``s``."""
    return ["--redis-url", s.redis_url, "--stream", s.stream, "--group", s.group]


def tradescribe(
    *args: str | Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
    columns: int | None = None,
    channel_key: bool = False,
    prefix: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """``python -m worker.cli ARGS...`` in a child process, as a person runs it.

    No ``TRADESCRIBE_*`` variable reaches it but those in ``env``, and the suite's
    channel key when ``channel_key`` (commands that talk to a worker need it).
    ``columns`` sets the width tables are drawn at; ``prefix`` goes before the
    interpreter (e.g. ``setpriv`` to drop capabilities)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRADESCRIBE_")}
    if channel_key:
        clean["TRADESCRIBE_CHANNEL_KEY"] = os.environ["TRADESCRIBE_CHANNEL_KEY"]
    if columns is not None:
        clean["COLUMNS"] = str(columns)
    return subprocess.run(
        [*prefix, sys.executable, "-m", "worker.cli", *map(str, args)],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_clear_line(out: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    """Exit ``code``, no traceback, and every needle in what it printed to stderr."""
    assert out.returncode == code, out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    for needle in needles:
        assert needle in out.stderr, out.stderr


def unit_service() -> configparser.SectionProxy:
    """The ``[Service]`` section of deploy/tradescribe.service."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser["Service"]


# -- real processes ---------------------------------------------------------------------


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


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (not gone, not a zombie): Linux /proc."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"
