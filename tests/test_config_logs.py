"""`tradescribe config`, one-line errors for bad settings, and JSON log lines with counters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from contracts import Publisher
from tests.helpers import WorkerProcess, cli, count, wait_for
from worker.settings import PG_BATCH_MAX, SQLITE_BATCH_MAX, Settings


@pytest.fixture(autouse=True)
def _no_tradescribe_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TRADESCRIBE_"):
            monkeypatch.delenv(name)


async def test_config_masks_the_redis_password() -> None:
    result = await cli("config", "--json", "--redis-url", "redis://app:s3cret@10.0.0.5:6379/2")
    assert result.exit_code == 0, result.output
    values = json.loads(result.stdout)
    assert values["redis_url"] == "redis://app:***@10.0.0.5:6379/2"
    assert "s3cret" not in result.output
    table = await cli("config", "--redis-url", "redis://app:s3cret@10.0.0.5:6379/2")
    assert "s3cret" not in table.output
    assert "batch_max" in table.stdout


async def test_config_precedence_is_flags_then_env_then_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "tradescribe.toml"
    toml.write_text('stream = "from-toml"\ngroup = "group-from-toml"\nbatch_max = 7\n')
    monkeypatch.setenv("TRADESCRIBE_STREAM", "from-env")
    monkeypatch.setenv("TRADESCRIBE_BATCH_MAX", "9")
    env_wins = json.loads((await cli("config", "--json", "--config", str(toml))).stdout)
    flag_wins = json.loads(
        (await cli("config", "--json", "--config", str(toml), "--stream", "from-flag")).stdout
    )
    assert (env_wins["stream"], env_wins["group"], env_wins["batch_max"]) == (
        "from-env", "group-from-toml", 9,
    )  # fmt: skip
    assert flag_wins["stream"] == "from-flag"
    with_db = json.loads((await cli("config", "--json", "--db", str(tmp_path / "x.db"))).stdout)
    assert with_db["db"] == str(tmp_path / "x.db")  # the worker's --db, shown as it would run


async def test_batch_max_unset_is_each_engines_default_and_set_it_wins_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "postgresql://bot@db.example/trades"

    async def batch_max(*args: str) -> int:
        result = await cli("config", "--json", *args)
        assert result.exit_code == 0, result.output
        return int(json.loads(result.stdout)["batch_max"])

    assert await batch_max("--db", str(tmp_path / "x.db")) == SQLITE_BATCH_MAX == 2000
    assert await batch_max("--db", url) == PG_BATCH_MAX == 5000
    toml = tmp_path / "t.toml"
    toml.write_text(f'db = "{url}"\nbatch_max = 7\n')
    assert await batch_max("--config", str(toml)) == 7
    toml.write_text(f'database_url = "{url}"\n')
    assert await batch_max("--config", str(toml)) == PG_BATCH_MAX
    monkeypatch.setenv("TRADESCRIBE_BATCH_MAX", "9")
    assert await batch_max("--db", url) == 9
    assert Settings(db=url, batch_max=11).batch_max == 11


def test_bad_setting_value_prints_one_line_naming_it_and_exits_1() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "worker.cli", "config"],
        env={"PATH": "/usr/bin:/bin", "TRADESCRIBE_BATCH_MAX": "0"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: bad value for setting 'batch_max'")
    assert "TRADESCRIBE_BATCH_MAX" in lines[0]


def test_a_bad_value_names_only_the_ways_that_exist_to_set_it(tmp_path: Path) -> None:
    """A flag is named where the command has one; a TOML file where the value came from."""
    toml = tmp_path / "t.toml"
    toml.write_text("writer_process = 'maybe'\n")
    for args, env, wanted, unwanted in (
        (["worker", "--db", str(tmp_path / "x.db")], {"TRADESCRIBE_BATCH_MAX": "x"},
         "(--batch-max or TRADESCRIBE_BATCH_MAX)", None),
        (["config"], {"TRADESCRIBE_BATCH_MAX": "x"}, "(TRADESCRIBE_BATCH_MAX)", "--batch-max"),
        (["config", "--config", str(toml)], {},
         f"(TRADESCRIBE_WRITER_PROCESS or writer_process in {toml})", "--writer-process"),
    ):  # fmt: skip
        run = subprocess.run(
            [sys.executable, "-m", "worker.cli", *args],
            env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert run.returncode == 1, run.stderr
        assert wanted in run.stderr, run.stderr
        assert unwanted is None or unwanted not in run.stderr, run.stderr


def test_json_logs_carry_counters_on_the_start_and_stop_lines(
    settings: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "worker.jsonl"
    env = {**WorkerProcess(settings, log).env(), "TRADESCRIBE_LOG_FORMAT": "json"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "worker"], env=env, stdout=out, stderr=out
        )
    try:
        with Publisher(settings.redis_url, source="bot", stream=settings.stream) as pub:
            pub.publish("journal.entry", text="one")
            pub.publish("journal.entry", text="two")
        _wait_sync(lambda: count(settings.db, "events") == 2)
        _wait_sync(lambda: "ready:" in log.read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    ready = next(e for e in entries if " ready: " in e["msg"])
    stopped = next(e for e in entries if " stopped: " in e["msg"])
    assert set(ready["counters"]) >= {"events_stored", "dead_letters", "pending", "lag"}
    assert stopped["counters"]["committed"] == 2
    assert stopped["counters"]["by_type"] == {"journal.entry": 2}
    assert "committed=2" in stopped["msg"]


def _wait_sync(condition: Callable[[], Any], timeout: float = 20.0) -> None:
    anyio.run(lambda: wait_for(condition, timeout=timeout))
