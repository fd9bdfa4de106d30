"""`tradescribe backup` / `restore` and the worker's scheduled backups."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import anyio

from contracts import AsyncPublisher
from tests.helpers import (
    count,
    make_db,
    make_settings,
    query,
    run_cli,
    run_cli_in_thread,
    running_worker,
    wait_for,
)
from worker.settings import Settings
from worker.store.schema import MIGRATIONS, SCHEMA_VERSION


def last_stream_id(db: Path) -> str:
    ids = [r[0] for r in query(db, "SELECT stream_id FROM events")]
    return max(ids, key=lambda s: tuple(int(p) for p in s.split("-")))


async def test_backup_under_load_is_consistent_and_restores_to_its_counts(
    settings: Settings, tmp_path: Path
) -> None:
    to = tmp_path / "bk"
    db = str(settings.db)
    published = 0
    results = []
    async with running_worker(settings):
        stop = anyio.Event()

        async def load() -> None:
            nonlocal published
            async with AsyncPublisher(
                settings.redis_url, source="bot", stream=settings.stream
            ) as p:
                while not stop.is_set():
                    await p.publish("trade.opened", trade_id=f"L{published}", symbol="EURUSD",
                                    side="buy", quantity="1", entry_price="1.1")  # fmt: skip
                    published += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(load)
            await wait_for(lambda: count(settings.db, "events") >= 200, what="200 events")
            for _ in range(3):
                result = await run_cli_in_thread("backup", "--db", db, "--to", str(to), "--json")
                assert result.code == 0, result.err
                results.append(result.json())
            target = published + 100
            await wait_for(lambda: published >= target, what="100 more events")
            stop.set()
        await wait_for(lambda: count(settings.db, "events") == published, what="all committed")

    assert len(results) == 3
    for r in results:
        copy = Path(r["path"])
        # Each copy is one commit's state: log and projections agree, the id matches.
        assert count(copy, "events") == r["events"] == count(copy, "trades")
        assert r["last_stream_id"] == last_stream_id(copy)
        assert r["integrity"] == "ok"
        assert json.loads(Path(r["meta"]).read_text())["events"] == r["events"]
    assert 200 <= results[0]["events"] <= results[-1]["events"] < published

    restored = await run_cli_in_thread(
        "restore", results[-1]["path"], "--db", db, "--rewind-group",
        "--redis-url", settings.redis_url, "--stream", settings.stream, "--group", settings.group,
    )  # fmt: skip
    assert restored.code == 0, restored.err
    assert f"{results[-1]['events']} events, last stream id {results[-1]['last_stream_id']}" in (
        restored.out
    )
    assert count(settings.db, "events") == results[-1]["events"] == count(settings.db, "trades")
    saved = Path(restored.out.split("saved as ")[1].split()[0])
    assert count(saved, "events") == published  # the database it replaced was kept

    # The stream still holds what came after the backup: the worker reads it again.
    async with running_worker(settings):
        await wait_for(lambda: count(settings.db, "events") == published, what="replayed")
    assert count(settings.db, "trades") == published


def test_backups_are_private_and_only_the_newest_are_kept(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    anyio.run(make_db, db)
    kept = []
    for _ in range(3):
        result = run_cli("backup", "--db", str(db), "--keep", "2", "--json")
        assert result.code == 0, result.err
        kept.append(result.json())
    assert kept[2]["removed"] == [kept[0]["path"]]
    files = sorted(p.name for p in (tmp_path / "backups").iterdir())
    assert files == sorted(
        name for r in kept[1:] for name in (Path(r["path"]).name, Path(r["meta"]).name)
    )
    for p in (tmp_path / "backups").iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "backups").stat().st_mode) == 0o700


async def test_restore_refuses_while_a_worker_runs(settings: Settings, tmp_path: Path) -> None:
    async with running_worker(settings):
        backup = await run_cli_in_thread("backup", "--db", str(settings.db), "--json")
        assert backup.code == 0, backup.err
        refused = await run_cli_in_thread(
            "restore", backup.json()["path"], "--db", str(settings.db)
        )
    assert refused.code == 1
    assert refused.err.startswith("error: a worker (pid ")
    assert f"is running on {settings.db}; stop it before restoring" in refused.err


def test_restore_checks_integrity_first_and_leaves_the_database_alone(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    anyio.run(make_db, db)
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database at all" * 200)
    result = run_cli("restore", str(bad), "--db", str(db))
    assert result.code == 1
    assert result.err.strip() == (
        f"error: {bad} failed its integrity check (file is not a database); nothing restored"
    )
    assert query(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    missing = run_cli("restore", str(tmp_path / "nope.db"), "--db", str(db))
    assert (
        missing.err.strip()
        == f"error: {tmp_path / 'nope.db'} does not exist (fix the FILE argument)"
    )


async def test_worker_takes_scheduled_backups_and_keeps_the_newest(
    settings: Settings, tmp_path: Path, names: dict[str, str]
) -> None:
    folder = tmp_path / "scheduled"
    scheduled = make_settings(
        settings.db, settings.redis_url, names,
        backup_interval_s=0.1, backup_dir=folder, backup_keep=2,
    )  # fmt: skip

    def copies() -> list[str]:
        return sorted(p.name for p in folder.glob("*.db")) if folder.exists() else []

    async with running_worker(scheduled):
        await wait_for(lambda: len(copies()) == 2, what="two scheduled backups")
        first = copies()
        await wait_for(lambda: copies() != first and len(copies()) == 2, what="a newer backup")
    for name in copies():
        meta = json.loads((folder / (name + ".json")).read_text())
        assert meta["integrity"] == "ok"
        assert meta["schema_version"] == SCHEMA_VERSION


def _live_db_with_events(tmp_path: Path, n: int = 3) -> Path:
    db = tmp_path / "live.db"
    anyio.run(make_db, db)
    con = sqlite3.connect(db)
    con.executemany(
        "INSERT INTO events (event_id, type, source, account, plugin_id, mode, ts, stream_id,"
        " committed_at, body)"
        " VALUES (?, 'journal.entry', 'b', 'a', 'p', 'live', 't', ?, 't', '{}')",
        [(f"id-{i}", f"{i}-0") for i in range(n)],
    )
    con.commit()
    con.close()
    return db


def test_restore_refuses_a_foreign_database_and_keeps_the_live_one(tmp_path: Path) -> None:
    db = _live_db_with_events(tmp_path)
    foreign = tmp_path / "foreign.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, what TEXT)")
    con.commit()
    result = run_cli("restore", str(foreign), "--db", str(db))
    assert result.code == 1
    assert result.err.strip() == (
        f"error: {foreign} is not a tradescribe database (schema version 0); nothing restored"
    )
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")  # a foreign file that lies
    con.close()
    lying = run_cli("restore", str(foreign), "--db", str(db))
    assert lying.code == 1
    assert f"does not hold tradescribe's schema version {SCHEMA_VERSION}" in lying.err
    assert "table 'orders' is not part of it" in lying.err
    assert "table 'events' is missing" in lying.err
    assert count(db, "events") == 3


def test_restore_refuses_a_backup_with_a_trigger_or_view_of_its_own(tmp_path: Path) -> None:
    db = _live_db_with_events(tmp_path)
    backup = run_cli("backup", "--db", str(db), "--json")
    assert backup.code == 0, backup.err
    copy = Path(backup.json()["path"])
    con = sqlite3.connect(copy)
    con.execute(
        "CREATE TRIGGER rewrite AFTER INSERT ON events BEGIN "
        "UPDATE trades SET realized_pnl = 0; END"
    )
    con.commit()
    con.close()
    refused = run_cli("restore", str(copy), "--db", str(db))
    assert refused.code == 1
    assert "trigger 'rewrite' is not part of it" in refused.err
    assert "nothing restored" in refused.err
    assert query(db, "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'") == [(0,)]

    con = sqlite3.connect(copy)
    con.execute("DROP TRIGGER rewrite")
    con.execute("CREATE VIEW trades_shown AS SELECT * FROM trades")
    con.commit()
    con.close()
    viewed = run_cli("restore", str(copy), "--db", str(db))
    assert viewed.code == 1
    assert "view 'trades_shown' is not part of it" in viewed.err

    con = sqlite3.connect(copy)
    con.execute("DROP VIEW trades_shown")
    con.execute("DROP INDEX trades_closed")
    con.execute("CREATE INDEX trades_closed ON trades(closed_at)")
    con.commit()
    con.close()
    changed = run_cli("restore", str(copy), "--db", str(db))
    assert changed.code == 1
    assert "index 'trades_closed' is defined differently" in changed.err


def test_restore_accepts_a_backup_of_an_older_schema_version(tmp_path: Path) -> None:
    db = _live_db_with_events(tmp_path)
    old = tmp_path / "v3.db"
    con = sqlite3.connect(old)
    for version, statements in enumerate(MIGRATIONS[:3], start=1):
        for statement in statements:
            con.execute(statement)
        con.execute(f"PRAGMA user_version = {version}")
    con.commit()
    con.close()
    restored = run_cli("restore", str(old), "--db", str(db), "--json")
    assert restored.code == 0, restored.err
    assert query(db, "PRAGMA user_version") == [(3,)]
    assert count(db, "events") == 0
