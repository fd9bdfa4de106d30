"""Step 7, the read side: every query case timed on a database of closed trades.

``bench.readdata`` builds the database (1,000,000 closed trades in the
full run, 20,000 with ``--quick``) and times each case of its list through
``run_query``; this returns the figures that go under ``reads`` in the JSON:
per-case median ms, the slowest case, the number of indexes on ``trades``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import readdata

FULL_TRADES = 1_000_000
QUICK_TRADES = 20_000


def measure_reads(
    workdir: Path,
    quick: bool,
    trades: int | None = None,
    log: Callable[[str], None] | None = None,
    *,
    keep: bool = False,
) -> dict[str, Any]:
    """Build ``workdir/reads.db`` and time every read case; the ``reads`` figures.
    ``keep``: leave the file for the HTTP phase (which calls :func:`remove`)."""
    if trades is None:
        trades = QUICK_TRADES if quick else FULL_TRADES
    db = workdir / "reads.db"
    built = readdata.build(db, trades)
    if log is not None:
        log(f"reads: built {trades:,} closed trades in {built.seconds:.1f} s")
    timings = readdata.measure(db, trades, runs=3 if quick else 5)
    figures = readdata.summary(built, timings)
    if not keep:
        remove(db)
    return figures


def remove(db: Path) -> None:
    """The database and what SQLite and the worker keep beside it (up to a GB at full
    size; rebuilt in under a minute)."""
    for suffix in ("", "-wal", "-shm", ".lock", ".channel-key"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
