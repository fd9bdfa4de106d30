"""`tradescribe query` tables fit a 100-column terminal: the columns read first
stay, the others are named under the table."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from tests.querydata import seeded
from worker.cli.query import fetch, print_result
from worker.settings import Settings

CASES = [("active-trades", {}), ("history", {}), ("active-signals", {}), ("positions", {}),
         ("trade", {"trade_id": "T2"}), ("journal", {"date": "2026-11-18"}),
         ("daily-loss", {"date": "2026-11-18"}), ("plugins", {}), ("calendar", {})]  # fmt: skip


async def test_every_query_table_fits_100_columns_and_names_what_it_hides(
    settings: Settings,
) -> None:
    await seeded(settings)
    hidden_somewhere = 0
    for name, filters in CASES:
        out = io.StringIO()
        console = Console(file=out, width=100, force_terminal=False)
        result = fetch(name, filters, Path(settings.db))
        print_result(result, console)
        lines = out.getvalue().splitlines()
        assert max(len(line.rstrip()) for line in lines) <= 100, (name, out.getvalue())
        if result["rows"]:  # one line per row: no cell folded over several lines
            body = lines[lines.index(next(x for x in lines if x.startswith("┡"))) + 1 :]
            body = body[: body.index(next(x for x in body if x.startswith("└")))]
            assert len(body) == len(result["rows"]), (name, out.getvalue())
        hidden_somewhere += "not shown:" in out.getvalue()
        if name == "history":
            header = next(line for line in lines if "trade_id" in line)
            assert all(c in header for c in ("source", "symbol", "realized_pnl", "closed_at"))
    assert hidden_somewhere >= 3
