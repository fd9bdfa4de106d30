"""deploy/: the serve unit parses and names the real command; the nginx example
proxies to the address the unit binds, with the live stream unbuffered."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNIT = DEPLOY / "tradescribe-serve.service"
REMOTE_UNIT = DEPLOY / "tradescribe-serve-remote.service"
NGINX = DEPLOY / "nginx-tradescribe.conf"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
TRADESCRIBE = Path(sys.executable).parent / "tradescribe"


def _service(unit: Path = UNIT) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(unit)
    return parser["Service"]


def test_serve_unit_runs_serve_on_the_loopback_behind_the_proxy() -> None:
    service = _service()
    argv = shlex.split(service["ExecStart"])
    assert Path(argv[0]).name == "tradescribe"
    assert argv[1] == "serve"
    assert argv[2:] == ["--host", "127.0.0.1", "--port", "8470", "--behind-proxy"]
    assert service["User"] == "tradescribe"
    assert service["ProtectSystem"] == "strict"
    assert service["Environment"] == "TRADESCRIBE_DB=/var/lib/tradescribe/tradescribe.db"
    shown = subprocess.run([str(TRADESCRIBE), *argv[1:2], "--help"], capture_output=True,
                           text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    assert shown.returncode == 0
    assert "--behind-proxy" in shown.stdout


def test_remote_serve_unit_asks_the_worker_and_keeps_its_tokens_in_its_state() -> None:
    service = _service(REMOTE_UNIT)
    argv = shlex.split(service["ExecStart"])
    assert Path(argv[0]).name == "tradescribe"
    assert argv[1:] == ["serve", "--remote", "--host", "127.0.0.1", "--port", "8470",
                        "--behind-proxy"]  # fmt: skip
    assert service["Environment"] == "TRADESCRIBE_TOKENS=/var/lib/tradescribe-serve/tokens.db"
    assert service["StateDirectory"] == "tradescribe-serve"
    assert service["ReadWritePaths"] == "/var/lib/tradescribe-serve"
    assert "TRADESCRIBE_DB" not in REMOTE_UNIT.read_text()
    assert service["ProtectSystem"] == "strict"
    shown = subprocess.run([str(TRADESCRIBE), "serve", "--help"], capture_output=True,
                           text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    assert "--remote" in shown.stdout
    assert "TRADESCRIBE_TOKENS" in shown.stdout


def test_nginx_example_proxies_to_the_units_address_with_sse_unbuffered() -> None:
    text = NGINX.read_text()
    assert set(re.findall(r"proxy_pass (\S+);", text)) == {"http://127.0.0.1:8470"}
    stream = text[text.index("location = /api/v1/events/stream") :]
    assert "proxy_buffering off;" in stream
    assert "proxy_read_timeout" in stream
    assert "listen 443 ssl;" in text
    assert "X-Forwarded-For" in text


@pytest.mark.skipif(
    not os.access(SYSTEMD_ANALYZE, os.X_OK), reason="systemd-analyze is not installed here"
)
@pytest.mark.parametrize("source", [UNIT, REMOTE_UNIT], ids=lambda p: p.name)
def test_systemd_analyze_verify_accepts_the_serve_unit(tmp_path: Path, source: Path) -> None:
    unit = tmp_path / source.name
    text = source.read_text()
    unit.write_text(text.replace("/opt/tradescribe/bin/tradescribe", str(TRADESCRIBE)))
    run = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert source.name not in run.stderr, run.stderr


def test_the_bench_runs_serve_at_the_units_cpu_priority() -> None:
    """docs/benchmark.md's drain ratio holds for serve as deployed: below the worker."""
    from bench.httpload import SERVE_NICE

    assert int(_service()["Nice"]) == SERVE_NICE > 0
