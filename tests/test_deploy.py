"""deploy/: the unit parses, names the real command, and the examples are valid."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.helpers import DEPLOY, UNIT, unit_service, wait_for
from worker.embedded import find_redis_server, free_port
from worker.settings import load_settings

SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"


def _tradescribe_bin() -> Path:
    return Path(sys.executable).parent / "tradescribe"


def test_unit_execstart_runs_the_tradescribe_worker_command() -> None:
    argv = shlex.split(unit_service()["ExecStart"])
    assert Path(argv[0]).name == "tradescribe"
    assert argv[1:] == ["worker"]
    help_run = subprocess.run(
        [str(_tradescribe_bin()), *argv[1:], "--help"], capture_output=True, text=True, timeout=60
    )
    assert help_run.returncode == 0, help_run.stderr
    assert "Run the single writer" in help_run.stdout


def test_unit_has_the_service_and_hardening_settings() -> None:
    service = unit_service()
    expected = {
        "Type": "notify",
        "Restart": "on-failure",
        "User": "tradescribe",
        "StateDirectory": "tradescribe",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "ReadWritePaths": "/var/lib/tradescribe",
    }
    assert {k: service.get(k) for k in expected} == expected
    assert int(service["WatchdogSec"]) > 0
    assert service["Environment"] == "TRADESCRIBE_DB=/var/lib/tradescribe/tradescribe.db"


@pytest.mark.skipif(
    not os.access(SYSTEMD_ANALYZE, os.X_OK), reason="systemd-analyze is not installed here"
)
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # verify checks that ExecStart's binary exists: point it at this install's.
    text = UNIT.read_text().replace("/opt/tradescribe/bin/tradescribe", str(_tradescribe_bin()))
    unit = tmp_path / "tradescribe.service"
    unit.write_text(text)
    run = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert "tradescribe.service" not in run.stderr, run.stderr


@pytest.mark.skipif(
    not os.access(SYSTEMD_ANALYZE, os.X_OK), reason="systemd-analyze is not installed here"
)
def test_systemd_analyze_verify_rejects_a_missing_command(tmp_path: Path) -> None:
    unit = tmp_path / "tradescribe.service"
    unit.write_text(UNIT.read_text().replace("/opt/tradescribe", str(tmp_path / "nowhere")))
    run = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True)
    assert run.returncode != 0
    assert "not executable" in run.stderr


def test_environment_file_example_is_accepted_by_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for line in (DEPLOY / "tradescribe.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            monkeypatch.setenv(name, value)
    settings = load_settings(None)
    assert settings.log_format == "json"
    assert settings.consumer == "scribe-1"
    assert settings.public()["redis_url"] == "redis://:***@127.0.0.1:6379/0"


async def test_redis_conf_snippet_turns_on_what_the_guarantees_need(tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen(
        [str(find_redis_server()), str(DEPLOY / "redis-tradescribe.conf"),
         "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port, socket_connect_timeout=1, decode_responses=True)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        await wait_for(answers, timeout=10, what="redis-server with the snippet")
        config = {
            k: client.config_get(k)[k] for k in ("appendonly", "appendfsync", "maxmemory-policy")
        }
    finally:
        client.close()
        server.terminate()
        server.wait(10)
    assert config == {
        "appendonly": "yes",
        "appendfsync": "everysec",
        "maxmemory-policy": "noeviction",
    }
