"""deploy/tradescribe@.service: the template unit of a worker sharing partitions parses,
runs the real command with a consumer name per host and instance, and systemd accepts
it (``systemd-analyze verify``, where installed)."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
TEMPLATE = DEPLOY / "tradescribe@.service"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
TRADESCRIBE = Path(sys.executable).parent / "tradescribe"
needs_systemd = pytest.mark.skipif(
    not os.access(SYSTEMD_ANALYZE, os.X_OK), reason="systemd-analyze is not installed here"
)


def _service() -> dict[str, list[str]]:
    """The [Service] settings, each with every value it is given (EnvironmentFile twice)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    values: dict[str, list[str]] = {}
    section = None
    for line in TEMPLATE.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    parser.read(TEMPLATE)  # and it parses as an INI file at all
    return values


def test_template_runs_one_worker_per_instance_named_after_host_and_instance() -> None:
    service = _service()
    argv = shlex.split(service["ExecStart"][0])
    assert Path(argv[0]).name == "tradescribe"
    assert argv[1:] == ["worker", "--consumer", "%H-%i"]
    assert service["EnvironmentFile"] == [
        "/etc/tradescribe/tradescribe.env",
        "-/etc/tradescribe/tradescribe-%i.env",  # optional: this instance's own settings
    ]
    assert service["Type"] == ["notify"]
    assert service["User"] == ["tradescribe"]
    assert service["ProtectSystem"] == ["strict"]
    assert "6" in service["RestartPreventExitStatus"][0].split()  # partitions on SQLite
    shown = subprocess.run([str(TRADESCRIBE), "worker", "--help"], capture_output=True,
                           text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    assert shown.returncode == 0
    assert "--consumer" in shown.stdout
    assert "--partitions" in shown.stdout


@needs_systemd
@pytest.mark.parametrize("name", ["tradescribe@.service", "tradescribe@w1.service"])
def test_systemd_analyze_verify_accepts_the_template_and_an_instance(
    tmp_path: Path, name: str
) -> None:
    text = TEMPLATE.read_text().replace("/opt/tradescribe/bin/tradescribe", str(TRADESCRIBE))
    (tmp_path / "tradescribe@.service").write_text(text)
    unit = tmp_path / name
    unit.write_text(text)
    run = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "tradescribe@" not in run.stderr, run.stderr


@needs_systemd
def test_systemd_analyze_verify_rejects_the_template_without_its_command(tmp_path: Path) -> None:
    unit = tmp_path / "tradescribe@w1.service"
    unit.write_text(TEMPLATE.read_text().replace("/opt/tradescribe", str(tmp_path / "nowhere")))
    run = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True)
    assert run.returncode != 0
    assert "not executable" in run.stderr
