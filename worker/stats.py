"""The worker's counters: what ``status``, the heartbeat and the metrics report."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stats:
    """Counters the status command and the heartbeat report."""

    started_at: float = field(default_factory=time.time)
    committed: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    batches: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    last_commit_at: float | None = None
    last_stream_id: str | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    commit_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=1000))
    commits: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=600))

    def note_error(self, what: str, exc: BaseException) -> None:
        self.last_error = f"{what}: {exc}"
        self.last_error_at = time.time()

    def recovered(self, what: str) -> None:
        """``what`` works again: forget its error (an idle worker has no commit to do it)."""
        if self.last_error is not None and self.last_error.startswith(what + ":"):
            self.last_error = None

    def totals(self) -> dict[str, Any]:
        """The counters as a dict, for structured (JSON) log lines."""
        return {
            "committed": self.committed,
            "duplicates": self.duplicates,
            "dead_letters": self.dead_letters,
            "batches": self.batches,
            "by_type": dict(self.by_type),
        }

    def summary(self) -> str:
        return (
            f"committed={self.committed} duplicates={self.duplicates} "
            f"dead_letters={self.dead_letters} batches={self.batches}"
        )
