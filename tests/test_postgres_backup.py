"""``tradescribe backup`` / ``restore`` on PostgreSQL run pg_dump and pg_restore (the
ones the ``pgserver`` wheel ships, put on PATH here), or print the command to run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from contracts.query import run_query
from tests.helpers import make_settings, run_cli_in_thread
from tests.pgfix import create_database_sync
from tests.querydata import NOW, seeded

pytestmark = pytest.mark.timeout(180)


def _pg_bin() -> Path:
    import pgserver  # type: ignore[import-untyped,unused-ignore]

    return Path(pgserver.__file__).parent / "pginstall" / "bin"


async def test_backup_and_restore_on_postgresql_use_pg_dump_and_pg_restore(
    redis_url: str,
    names: dict[str, str],
    tmp_path: Path,
    postgres_admin_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = create_database_sync(postgres_admin_url)
    await seeded(make_settings(url, redis_url, names))  # type: ignore[arg-type]
    if not (_pg_bin() / "pg_dump").is_file():
        pytest.skip(f"no pg_dump in {_pg_bin()}")
    monkeypatch.setenv("PATH", f"{_pg_bin()}{os.pathsep}{os.environ['PATH']}")
    done = await run_cli_in_thread("backup", "--db", url, "--to", str(tmp_path / "b"), "--json")
    assert done.code == 0, done.err
    made = done.json()
    assert made["events"] == 19
    assert Path(made["path"]).stat().st_mode & 0o777 == 0o600
    fresh = create_database_sync(postgres_admin_url)
    back = await run_cli_in_thread("restore", made["path"], "--db", fresh)
    assert back.code == 0, back.err
    assert "(pg_restore): 19 events" in back.out
    for name in ("history", "pnl", "journal", "positions"):
        assert (
            run_query(fresh, name, {}, now=NOW).as_dict()
            == run_query(url, name, {}, now=NOW).as_dict()
        )
    check = await run_cli_in_thread("db", "rebuild", "--check", "--db", fresh)
    assert check.code == 0, check.out
    again = await run_cli_in_thread("restore", made["path"], "--db", fresh)
    assert again.code == 1
    assert "already holds a tradescribe database; restore into an empty one" in again.err
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    missing = await run_cli_in_thread("backup", "--db", url, "--to", str(tmp_path / "c"))
    assert missing.code == 1
    assert missing.err.count("\n") == 1
    assert "pg_dump is not on PATH" in missing.err
    assert "run it yourself: pg_dump --format=custom --file=" in missing.err
