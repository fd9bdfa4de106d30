"""``tradescribe dlq``: an operator lists, reads, replays after a fix, and purges dead letters."""

from __future__ import annotations

import json
from pathlib import Path

import anyio.to_thread
import redis
from typer.testing import CliRunner

from contracts.events import WIRE_FIELD
from contracts.query import QueryError
from contracts.query_db import connect_readonly
from tests.conftest import database_of
from tests.helpers import (
    make_settings,
    running_worker,
    tradescribe,
    wait_for,
    wire_events,
)
from worker.cli.app import app
from worker.settings import Settings


def dlq(settings: Settings, *args: str) -> str:
    where = ["--db", str(database_of(settings))]
    if args[0] == "replay":
        where += ["--redis-url", settings.redis_url, "--stream", settings.stream]
    result = CliRunner().invoke(app, ["dlq", *args, *where])
    assert result.exit_code == 0, result.output
    return result.output


def _all_read(client: redis.Redis, settings: Settings, entries: int) -> bool:
    group = client.xinfo_groups(settings.stream)[0]
    return bool(group["entries-read"] == entries and group["pending"] == 0)


def rows_in(settings: Settings, table: str) -> int:
    """Rows in ``table`` of the SQLite file or the PostgreSQL database; 0 before it exists."""
    try:
        with connect_readonly(database_of(settings)) as con:
            return int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except QueryError:
        return 0


async def test_dead_letters_can_be_listed_shown_replayed_after_a_fix_and_purged(
    engine_settings: Settings, sync_redis: redis.Redis, names: dict[str, str]
) -> None:
    settings = engine_settings  # once on the SQLite file, once on PostgreSQL
    strict = make_settings(database_of(settings), settings.redis_url, names,  # type: ignore[arg-type]
                           max_message_bytes=256)  # fmt: skip
    big = wire_events("dlq", 1)[0].replace('"trade_id"', '"notes":"' + "n" * 300 + '","trade_id"')
    async with running_worker(strict):
        sync_redis.xadd(settings.stream, {WIRE_FIELD: big})
        sync_redis.xadd(settings.stream, {WIRE_FIELD: b"not json"})
        await wait_for(lambda: rows_in(settings, "dead_letters") == 2, what="2 dead letters")
    rows = json.loads(dlq(settings, "list", "--json"))
    assert [r["reason"][:8] for r in rows] == ["invalid ", "entry is"]
    too_big = rows[1]["id"]
    assert '"notes":"nnn' in dlq(settings, "show", str(too_big))

    # the fix: a worker with the default (larger) message limit, running while we replay
    async with running_worker(settings):
        out = await anyio.to_thread.run_sync(lambda: dlq(settings, "replay", str(too_big)))
        assert out.strip() == f"replayed 1 dead letters to {settings.stream}"
        await wait_for(lambda: rows_in(settings, "events") == 1, what="the replayed event")
        await anyio.to_thread.run_sync(lambda: dlq(settings, "replay", str(too_big)))
        await wait_for(lambda: _all_read(sync_redis, settings, 4), what="the second replay read")
    with connect_readonly(database_of(settings)) as con:
        stored = con.execute("SELECT event_id FROM events").fetchall()
    assert [tuple(r) for r in stored] == [(json.loads(big)["id"],)]
    left = json.loads(dlq(settings, "list", "--json"))
    assert [r["id"] for r in left] == [rows[0]["id"]]  # replayed rows are hidden by default
    out = dlq(settings, "purge", "--before", "2999-01-01", "--json")
    assert json.loads(out) == {"deleted": 2}
    assert rows_in(settings, "dead_letters") == 0


def test_dlq_mistakes_are_one_clear_line(settings: Settings, tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    for args, expected in (
        (["show", "7", "--db", str(missing)], f"error: database {missing} does not exist"),
        (["purge", "--before", "someday", "--db", str(missing)], "error: --before 'someday'"),
        (["replay", "--db", str(missing)], "error: name the dead letters to replay"),
    ):
        proc = tradescribe("dlq", *args)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.startswith(expected), proc.stderr
        assert "Traceback" not in proc.stderr
