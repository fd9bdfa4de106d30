"""The benchmark's own error: one clear line, never a traceback."""

from __future__ import annotations

from worker.errors import WorkerError


class BenchError(WorkerError):
    """The benchmark cannot run or cannot finish (bad path, worker died, timeout)."""
