"""The entity tables: their keys and the value columns events may set.

Trades, signals, positions and daily stats are rows that many events update
(see :mod:`worker.store.projections`); the append-only tables' columns are here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from contracts.vocabulary import TENANCY


@dataclass(frozen=True)
class Entity:
    """An entity table: its key columns and the value columns events may set."""

    table: str
    key: tuple[str, ...]
    columns: tuple[str, ...]

    @property
    def all_columns(self) -> tuple[str, ...]:
        return (*self.key, *self.columns, "created_at", "updated_at", "attributes", "versions")

    @cached_property
    def column_set(self) -> frozenset[str]:
        return frozenset(self.columns)


TRADES = Entity(
    "trades",
    ("source", "trade_id"),
    (
        *TENANCY,
        "symbol",
        "side",
        "quantity",
        "entry_price",
        "stop_loss",
        "take_profit",
        "exit_price",
        "current_price",
        "realized_pnl",
        "unrealized_pnl",
        "fees",
        "exit_reason",
        "strategy",
        "notes",
        "status",
        "opened_at",
        "closed_at",
    ),
)
SIGNALS = Entity(
    "signals",
    ("source", "signal_id"),
    (
        *TENANCY,
        "symbol",
        "side",
        "entry_price",
        "stop_loss",
        "take_profit",
        "current_price",
        "exit_price",
        "realized_pnl",
        "unrealized_pnl",
        "confidence",
        "timeframe",
        "strategy",
        "exit_reason",
        "notes",
        "status",
        "emitted_at",
        "closed_at",
    ),
)
POSITIONS = Entity(
    "positions",
    ("account", "source", "mode", "position_key"),
    (
        "plugin_id",
        "symbol",
        "quantity",
        "entry_price",
        "current_price",
        "unrealized_pnl",
        "realized_pnl",
        "lot_size",
        "exchange",
        "instrument_token",
        "is_active",
    ),
)
DAILY_STATS = Entity(
    "daily_stats",
    ("account", "source", "plugin_id", "mode", "date"),
    (
        "total_realized_pnl",
        "total_unrealized_pnl",
        "protected_profit",
        "number_of_trades",
        "daily_loss_used",
        "daily_loss_limit",
        "loss_limit_hit",
        "trading_blocked",
        "trailing_sl_active",
        "trailing_sl_level",
        "paper_balance",
        "signals_today",
    ),
)
ENTITIES = (TRADES, SIGNALS, POSITIONS, DAILY_STATS)

STATUS_HISTORY_COLUMNS = ("event_id", "source", "trade_id", "status", "ts", "event_type")
JOURNAL_COLUMNS = (
    "event_id",
    "source",
    *TENANCY,
    "at",
    "title",
    "text",
    "trade_id",
    "signal_id",
    "category",
    "tags",
    "attributes",
)
AUDIT_COLUMNS = (
    "event_id",
    "source",
    *TENANCY,
    "ts",
    "action",
    "user",
    "component",
    "level",
    "details",
    "ip_address",
    "attributes",
)
