"""Which columns of a table fit a terminal: the ones a person reads first stay,
the rest are named under the table (``--json`` and ``--csv`` keep every column)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

# Dropped first to last when a table is too wide; then from the right.
LEAST_NEEDED = (
    "attributes", "versions", "event_id", "plugin_id", "mode", "fees", "instrument_token",
    "exchange", "lot_size", "updated_at", "opened_at", "emitted_at", "take_profit",
    "stop_loss", "current_price", "confidence", "timeframe", "status", "strategy",
    "exit_reason", "account", "tags", "category",
)  # fmt: skip
# Kept longest: what a row is, and its outcome.
MOST_NEEDED = frozenset({
    "source", "trade_id", "signal_id", "symbol", "side", "quantity", "realized_pnl", "pnl",
    "closed_at", "at", "title", "text", "date", "period", "trades", "percent", "name",
})  # fmt: skip
PADDING = 3  # a cell's border and spaces in a rich table
KEEP_AT_LEAST = 3


def fit_columns(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    width: int,
    cell: Callable[[Any], str] = str,
) -> tuple[list[str], list[str]]:
    """(columns shown, columns hidden) so that the table's natural width fits ``width``."""
    natural = {c: max([len(c), *(len(cell(r.get(c))) for r in rows)]) + PADDING for c in columns}
    shown = list(columns)
    rest = list(reversed(shown))
    order = (
        [c for c in LEAST_NEEDED if c in shown]
        + [c for c in rest if c not in MOST_NEEDED]
        + [c for c in rest if c in MOST_NEEDED]
    )
    hidden: list[str] = []
    for column in order:
        if sum(natural[c] for c in shown) + 1 <= width or len(shown) <= KEEP_AT_LEAST:
            break
        if column in shown:
            shown.remove(column)
            hidden.append(column)
    return shown, [c for c in columns if c in hidden]
