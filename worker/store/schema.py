"""The database schema, as numbered migrations.

``PRAGMA user_version`` holds the number of the last migration applied. Each
migration runs in its own transaction and only ever moves the version forward,
so running them again changes nothing.
"""

from __future__ import annotations

import functools
import sqlite3

from worker.store import aggregates
from worker.store.projections import DAILY_STATS, POSITIONS, SIGNALS, TRADES, Entity

_REAL = {
    "quantity",
    "entry_price",
    "stop_loss",
    "take_profit",
    "exit_price",
    "current_price",
    "realized_pnl",
    "unrealized_pnl",
    "fees",
    "confidence",
    "lot_size",
    "total_realized_pnl",
    "total_unrealized_pnl",
    "protected_profit",
    "daily_loss_used",
    "daily_loss_limit",
    "trailing_sl_level",
    "paper_balance",
}
_INTEGER = {
    "number_of_trades",
    "signals_today",
    "is_active",
    "loss_limit_hit",
    "trading_blocked",
    "trailing_sl_active",
}


def _entity_table(entity: Entity) -> str:
    cols = [f"{k} TEXT NOT NULL" for k in entity.key]
    for c in entity.columns:
        kind = "REAL" if c in _REAL else "INTEGER" if c in _INTEGER else "TEXT"
        cols.append(f"{c} {kind}")
    cols += [
        "created_at TEXT NOT NULL",
        "updated_at TEXT NOT NULL",
        "attributes TEXT NOT NULL DEFAULT '{}'",
        "versions TEXT NOT NULL DEFAULT '{}'",
        f"PRIMARY KEY ({', '.join(entity.key)})",
    ]
    body = ",\n    ".join(cols)
    return f"CREATE TABLE {entity.table} (\n    {body}\n)"


_V1 = [
    """CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    source TEXT NOT NULL,
    account TEXT NOT NULL,
    plugin_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    subject TEXT,
    ts TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    committed_at TEXT NOT NULL,
    body TEXT NOT NULL
)""",
    "CREATE INDEX events_subject ON events(source, subject)",
    _entity_table(TRADES),
    "CREATE INDEX trades_status ON trades(status, account)",
    "CREATE INDEX trades_closed_at ON trades(closed_at)",
    "CREATE INDEX trades_account_closed ON trades(account, closed_at)",
    "CREATE INDEX trades_plugin ON trades(plugin_id, status)",
    "CREATE INDEX trades_symbol ON trades(symbol)",
    """CREATE TABLE trade_status_history (
    event_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    trade_id TEXT NOT NULL,
    status TEXT NOT NULL,
    ts TEXT NOT NULL,
    event_type TEXT NOT NULL
)""",
    "CREATE INDEX trade_status_history_trade ON trade_status_history(source, trade_id, ts)",
    _entity_table(SIGNALS),
    "CREATE INDEX signals_status ON signals(status, account)",
    "CREATE INDEX signals_closed_at ON signals(closed_at)",
    _entity_table(POSITIONS),
    "CREATE INDEX positions_active ON positions(is_active, account)",
    _entity_table(DAILY_STATS),
    "CREATE INDEX daily_stats_date ON daily_stats(date, account)",
    """CREATE TABLE journal_entries (
    event_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    account TEXT NOT NULL,
    plugin_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    at TEXT NOT NULL,
    title TEXT,
    text TEXT NOT NULL,
    trade_id TEXT,
    signal_id TEXT,
    category TEXT,
    tags TEXT,
    attributes TEXT NOT NULL DEFAULT '{}'
)""",
    "CREATE INDEX journal_at ON journal_entries(at)",
    """CREATE TABLE audit_log (
    event_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    account TEXT NOT NULL,
    plugin_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    ts TEXT NOT NULL,
    action TEXT NOT NULL,
    user TEXT,
    component TEXT,
    level TEXT,
    details TEXT,
    ip_address TEXT,
    attributes TEXT NOT NULL DEFAULT '{}'
)""",
    "CREATE INDEX audit_ts ON audit_log(ts)",
    "CREATE INDEX audit_action ON audit_log(action)",
    """CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY,
    stream_id TEXT NOT NULL,
    event_id TEXT,
    raw BLOB NOT NULL,
    reason TEXT NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 1,
    received_at TEXT NOT NULL,
    replayed_at TEXT
)""",
    "CREATE INDEX dead_letters_received ON dead_letters(received_at)",
    """CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
)""",
]

# Version 2 (issue 4, the read side): covering indexes for the dashboard queries, so
# P&L sums, history summaries and per-plugin/strategy statistics read only the index.
_V2_QUERY_INDEXES = [
    """CREATE INDEX trades_closed_cover ON trades(status, closed_at, realized_pnl,
    account, source, plugin_id, mode, side, strategy, symbol)""",
    "CREATE INDEX trades_plugin_cover ON trades(status, plugin_id, realized_pnl, closed_at)",
    "CREATE INDEX trades_strategy_cover ON trades(status, strategy, realized_pnl, closed_at)",
    "CREATE INDEX trades_source_closed ON trades(source, status, closed_at, realized_pnl)",
]

# Version 3 (issue 4): closed trades summed per UTC day and tenant, kept exact by
# triggers (see worker/store/aggregates.py), so all-history sums stay fast at millions of trades.
# Partial indexes are used only by queries that repeat the condition word for word.
ACTIVE_TRADES = "status IN ('pending', 'open', 'partial')"
ACTIVE_SIGNALS = "status IN ('active', 'triggered')"
_V3_TRADE_DAYS = [
    *aggregates.MIGRATION,
    f"CREATE INDEX trades_active ON trades(opened_at) WHERE {ACTIVE_TRADES}",
    f"CREATE INDEX signals_active ON signals(emitted_at) WHERE {ACTIVE_SIGNALS}",
    "CREATE INDEX positions_open ON positions(account, source) WHERE is_active = 1",
]

# Version 4 (issue 6, write speed): the worker keeps trade_days itself, one upsert per
# day and tenant per batch, from the rows it merges (worker/store/write.py); the triggers fired
# three statements per trade written and cost more than a quarter of a batch's time.
_V4_WRITE = [f"DROP TRIGGER IF EXISTS {name}" for name in aggregates.TRIGGER_NAMES]

# Version 5 (issue 4c, reads at 1,000,000 trades; fewer indexes for the writer): two
# covering indexes replace nine. ``trades_closed`` holds closed trades in the history's
# exact order (closed_at, trade_id) and every column of a history row, so a page, a deep
# offset (skipped entries are never looked up in the table) and every closed_at range
# (closed-today, the calendar's pieces, the sums' edges, the worker's best/worst
# recompute, aggregates.Aggregate.recompute_sql) read the index alone.
# ``trades_symbol_cover`` serves a symbol filter (a substring is first resolved to the
# symbols it matches, read from its prefix by a loose index scan) and a sparse symbol's
# page.
TRADES_INDEXES_V5 = [
    """CREATE INDEX trades_closed ON trades(closed_at, trade_id, status, realized_pnl,
    account, source, plugin_id, mode, side, strategy, symbol, quantity, entry_price,
    exit_price, fees, exit_reason, opened_at)""",
    """CREATE INDEX trades_symbol_cover ON trades(symbol, status, closed_at, trade_id,
    realized_pnl, account, source, plugin_id, mode, side, strategy)""",
]
DROPPED_V5 = (
    "trades_status", "trades_closed_at", "trades_account_closed", "trades_plugin",
    "trades_symbol", "trades_closed_cover", "trades_plugin_cover", "trades_strategy_cover",
    "trades_source_closed",
)  # fmt: skip
# ``trade_months`` sums closed trades per UTC month, tenant, symbol and side, so that a
# symbol or side filter over all of history reads a few thousand rows, not every trade.
_V5_READS = [
    *TRADES_INDEXES_V5,
    *(f"DROP INDEX IF EXISTS {name}" for name in DROPPED_V5),
    aggregates.CREATE_MONTHS,
    aggregates.BACKFILL_MONTHS,
]

# Version 6 (issue 14, trust): a stream entry is dead-lettered once however often it is
# delivered (copies a redelivery left behind are dropped, the first kept), and an
# oversized entry keeps only its first bytes, with its whole size and SHA-256.
_V6_DEAD_ONCE = [
    """DELETE FROM dead_letters WHERE id NOT IN
    (SELECT min(id) FROM dead_letters GROUP BY stream_id)""",
    "CREATE UNIQUE INDEX dead_letters_stream ON dead_letters(stream_id)",
    "ALTER TABLE dead_letters ADD COLUMN raw_size INTEGER",
    "ALTER TABLE dead_letters ADD COLUMN raw_sha256 TEXT",
]

# MIGRATIONS[n - 1] brings a database from version n - 1 to version n.
MIGRATIONS: list[list[str]] = [
    _V1,
    _V2_QUERY_INDEXES,
    _V3_TRADE_DAYS,
    _V4_WRITE,
    _V5_READS,
    _V6_DEAD_ONCE,
]
SCHEMA_VERSION = len(MIGRATIONS)


# What a database of each version holds: (type, name, tbl_name, sql) rows of
# sqlite_master, with the SQL's whitespace collapsed. A file to restore must hold
# exactly the set of its version: a trigger or view of its own could rewrite rows
# later or show other data, and a foreign database would replace the live one.
SchemaRow = tuple[str, str, str, str | None]


def _normal(sql: str | None) -> str | None:
    return " ".join(sql.split()) if sql is not None else None


def schema_of(con: sqlite3.Connection) -> set[SchemaRow]:
    """The schema objects of ``con``'s main database (planner statistics left out)."""
    rows = con.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_stat%'"
    )
    return {(str(t), str(n), str(tbl), _normal(sql)) for t, n, tbl, sql in rows}


@functools.cache
def expected_schema(version: int) -> frozenset[SchemaRow]:
    """The schema a fresh database has after migrations 1..``version``."""
    con = sqlite3.connect(":memory:")
    try:
        for statements in MIGRATIONS[:version]:
            for statement in statements:
                con.execute(statement)
        return frozenset(schema_of(con))
    finally:
        con.close()


def _tables_first(key: tuple[str, str]) -> tuple[bool, str, str]:
    return key[0] == "index", key[0], key[1]


def schema_differences(con: sqlite3.Connection, version: int, limit: int = 5) -> list[str]:
    """How ``con``'s schema differs from tradescribe's schema ``version`` (empty: same)."""
    found = schema_of(con)
    expected = expected_schema(version)
    ours = {(t, n): sql for t, n, _, sql in expected}
    theirs = {(t, n): sql for t, n, _, sql in found}
    problems = []
    for key in sorted(theirs.keys() - ours.keys(), key=_tables_first):
        problems.append(f"{key[0]} {key[1]!r} is not part of it")
    for key in sorted(ours.keys() - theirs.keys(), key=_tables_first):
        problems.append(f"{key[0]} {key[1]!r} is missing")
    for key in sorted(ours.keys() & theirs.keys(), key=_tables_first):
        if ours[key] != theirs[key]:
            problems.append(f"{key[0]} {key[1]!r} is defined differently")
    if not problems and found != expected:
        problems.append("a table or index belongs to another table")
    more = len(problems) - limit
    return problems[:limit] + ([f"(+{more} more)"] if more > 0 else [])
