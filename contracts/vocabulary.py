"""The words every part shares: event types, statuses, tenancy. Standard library only,
so that the worker's write process can import them without loading the models."""

from __future__ import annotations

EVENT_TYPES = (
    "trade.opened",
    "trade.updated",
    "trade.closed",
    "signal.emitted",
    "signal.updated",
    "signal.closed",
    "position.updated",
    "daily_stats.updated",
    "journal.entry",
    "audit.event",
)
# A terminal status outranks any other: a late update cannot reopen a closed trade.
TERMINAL_STATUSES = frozenset({"closed", "cancelled", "expired"})
# Who a row belongs to beside its source (the bot): envelope fields of every event.
TENANCY = ("account", "plugin_id", "mode")
# The same with the source: what a reader filters by.
ROW_TENANCY = ("account", "source", "plugin_id", "mode")

# The ``meta`` row the worker bumps in every commit that changes the sums of a day
# before yesterday (worker/store/aggregates.py); readers that keep sums of earlier
# months across commits key them with its value (contracts/query_stats.py).
SETTLED_CHANGED = "settled_sums_changed"
