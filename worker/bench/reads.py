"""Step 5, the read side: a hook for the query timings at 1,000,000 trades.

The read-side benchmark (``bench/queries.py``, issue 4) builds its own database
and times every query of ``contracts.query``. When it offers a function that
returns its timings, call it here and return ``{query name: median ms}``; the
figures then appear in the JSON under ``reads``. Until then this returns None
and the table says the reads were not measured.
"""

from __future__ import annotations

from pathlib import Path


def measure_reads(workdir: Path, quick: bool) -> dict[str, float] | None:
    """Query timings in ms by query name, or None while no read benchmark is wired in."""
    del workdir, quick
    return None
