"""Schema evolution: `db version`, `db migrate` (backup first), `db rebuild`, newer databases."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from contracts import AsyncPublisher
from tests.helpers import (
    WorkerProcess,
    count,
    make_db,
    query,
    run_cli,
    run_cli_in_thread,
    running_worker,
    wait_for,
)
from worker.settings import Settings
from worker.store import maintenance, sqlite
from worker.store.schema import MIGRATIONS, SCHEMA_VERSION


def test_version_then_migrate_then_up_to_date(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    before = run_cli("db", "version", "--db", str(db))
    assert before.code == 0
    assert (
        before.out.strip() == f"{db}: schema version 0 (this tradescribe: {SCHEMA_VERSION}; "
        "no such file yet: the worker creates it at start)"
    )

    dry = run_cli("db", "migrate", "--dry-run", "--db", str(db))
    assert dry.code == 0
    assert "would apply migration 1" in dry.out
    assert not db.exists()  # a dry run creates nothing

    done = run_cli("db", "migrate", "--db", str(db), "--json")
    assert done.code == 0, done.err
    assert (done.json()["before"], done.json()["after"]) == (0, SCHEMA_VERSION)
    after = run_cli("db", "version", "--db", str(db), "--json")
    assert after.json()["state"] == "up to date"
    again = run_cli("db", "migrate", "--db", str(db))
    assert "nothing to do: up to date" in again.out


@pytest.fixture
def next_schema(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Pretend this tradescribe has migrations after version 1 (appended by the test)."""
    migrations = [*MIGRATIONS]

    def refresh() -> None:
        for module in (sqlite, maintenance):
            monkeypatch.setattr(module, "MIGRATIONS", migrations)
            monkeypatch.setattr(module, "SCHEMA_VERSION", len(migrations))

    class Growing(list[list[str]]):
        def append(self, item: list[str]) -> None:
            migrations.append(item)
            refresh()

    refresh()
    return Growing()


def test_migration_backs_the_database_up_first_and_rolls_back_a_failing_one(
    tmp_path: Path, next_schema: list[list[str]]
) -> None:
    db = tmp_path / "t.db"
    anyio.run(make_db, db)
    con = sqlite3.connect(db)
    con.execute("INSERT INTO meta VALUES ('last_stream_id', '5-0')")
    con.commit()
    con.close()

    next_schema.append(["CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)"])
    ok = run_cli("db", "migrate", "--db", str(db), "--json")
    assert ok.code == 0, ok.err
    result = ok.json()
    v = SCHEMA_VERSION
    assert (result["before"], result["after"]) == (v, v + 1)
    backup = Path(result["backup"])
    assert backup.parent == tmp_path / "backups"
    assert backup.name.startswith(f"t-pre-v{v + 1}-")
    meta = json.loads(Path(str(backup) + ".json").read_text())
    assert (meta["schema_version"], meta["last_stream_id"], meta["integrity"]) == (v, "5-0", "ok")

    next_schema.append(["CREATE TABLE half (a)", "INSERT INTO no_such_table VALUES (1)"])
    bad = run_cli("db", "migrate", "--db", str(db))
    assert bad.code == 1
    assert bad.err.startswith(f"error: migration {v + 2} of ")
    assert "failed and was rolled back (no such table: no_such_table)" in bad.err
    assert f"stays at version {v + 1}" in bad.err
    assert query(db, "PRAGMA user_version") == [(v + 1,)]
    assert query(db, "SELECT name FROM sqlite_master WHERE name = 'half'") == []
    assert len(list((tmp_path / "backups").glob(f"t-pre-v{v + 2}-*.db"))) == 1


def test_worker_refuses_a_newer_database_in_one_line(settings: Settings, tmp_path: Path) -> None:
    anyio.run(make_db, settings.db)
    con = sqlite3.connect(settings.db)
    con.execute("PRAGMA user_version = 99")
    con.close()
    proc = WorkerProcess(settings, tmp_path / "w.log")
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "worker", "--log-level", "ERROR"],
        env=proc.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: {settings.db} has schema version 99, newer than this tradescribe "
        f"({SCHEMA_VERSION}); upgrade tradescribe before starting the worker"
    ]
    version = run_cli("db", "version", "--db", str(settings.db))
    assert version.code == 1
    assert "newer than this tradescribe" in version.out
    migrate = run_cli("db", "migrate", "--db", str(settings.db))
    assert migrate.code == 1
    assert migrate.err.count("\n") == 1
    assert f"newer than this tradescribe ({SCHEMA_VERSION})" in migrate.err


async def publish_trades(settings: Settings, n: int) -> None:
    async with AsyncPublisher(settings.redis_url, source="bot", stream=settings.stream) as pub:
        for i in range(n):
            await pub.publish("trade.opened", trade_id=f"T{i}", symbol="EURUSD", side="buy",
                              quantity="1", entry_price="1.1")  # fmt: skip
            if i % 2:
                await pub.publish("trade.closed", trade_id=f"T{i}", exit_price="1.2", fees="0.1")
            await pub.publish("position.updated", symbol="EURUSD", quantity=str(i))
            await pub.publish("journal.entry", text=f"note {i}", trade_id=f"T{i}")
        await pub.publish("daily_stats.updated", date="2024-05-01", number_of_trades=n)


async def test_rebuild_refuses_while_the_worker_runs_then_rebuilds_equal_tables(
    settings: Settings,
) -> None:
    async with running_worker(settings):
        await publish_trades(settings, 20)
        await wait_for(lambda: count(settings.db, "events") == 71, what="71 events")
        refused = await run_cli_in_thread("db", "rebuild", "--db", str(settings.db))
        assert refused.code == 1
        assert f"is running on {settings.db}; stop it before rebuilding" in refused.err
        # The check works on a snapshot, so it may run beside the worker.
        check = await run_cli_in_thread("db", "rebuild", "--check", "--db", str(settings.db))
        assert check.code == 0, check.out + check.err
        assert "EQUAL" in check.out
    con = sqlite3.connect(settings.db)
    con.execute("UPDATE trade_days SET gross_profit = gross_profit + 0.01")
    con.execute("UPDATE trades SET status = 'cancelled' WHERE trade_id = 'T3'")
    con.execute("DELETE FROM journal_entries WHERE text = 'note 4'")
    con.commit()
    con.close()
    broken = await run_cli_in_thread("db", "rebuild", "--check", "--json", "--db", str(settings.db))
    assert broken.code == 1
    tables = broken.json()["tables"]
    assert tables["trades"]["missing"] == 1
    assert tables["trades"]["extra"] == 1
    assert tables["journal_entries"] == {"live": 19, "rebuilt": 20, "missing": 0, "extra": 1}
    # the per-day sums the worker keeps are checked too (the 0.01 added above)
    assert tables["trade_days"]["missing"] == 1
    assert tables["trade_days"]["extra"] == 1
    assert tables["trade_months"] == {"live": 1, "rebuilt": 1, "missing": 0, "extra": 0}

    rebuilt = await run_cli_in_thread("db", "rebuild", "--db", str(settings.db))
    assert rebuilt.code == 0, rebuilt.err
    assert f"rebuilt {settings.db} from 71 events" in rebuilt.out
    assert query(settings.db, "SELECT status FROM trades WHERE trade_id = 'T3'") == [("closed",)]
    assert count(settings.db, "journal_entries") == 20
    assert (await run_cli_in_thread("db", "rebuild", "--check", "--db", str(settings.db))).code == 0
