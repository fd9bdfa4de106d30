"""Run ``tradescribe`` in this process, as a user would, capturing what it prints."""

from __future__ import annotations

import io
import json
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from typing import Any

from worker.cli.app import main


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run_cli(*args: str) -> CliResult:
    """``tradescribe ARGS...`` through ``worker.cli.app.main`` (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = ["tradescribe", *args]
    code: Any = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = saved
    if code is None:
        code = 0
    return CliResult(code if isinstance(code, int) else 1, out.getvalue(), err.getvalue())
