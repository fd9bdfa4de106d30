"""`tradescribe backup` / `restore` and the worker's scheduled backups."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import anyio

from contracts import AsyncPublisher
from tests.clirun import CliResult, run_cli
from tests.conftest import count, make_settings, query, running_worker, wait_for
from worker.schema import SCHEMA_VERSION
from worker.settings import Settings
from worker.store import SqliteStore


async def in_thread(*args: str) -> CliResult:
    return await anyio.to_thread.run_sync(lambda: run_cli(*args))


async def make_db(path: Path) -> None:
    s = await SqliteStore.open(path)
    try:
        await s.migrate()
    finally:
        await s.close()


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
                result = await in_thread("backup", "--db", db, "--to", str(to), "--json")
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

    restored = await in_thread(
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
        backup = await in_thread("backup", "--db", str(settings.db), "--json")
        assert backup.code == 0, backup.err
        refused = await in_thread("restore", backup.json()["path"], "--db", str(settings.db))
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
        assert meta["integrity"] == "ok" and meta["schema_version"] == SCHEMA_VERSION
