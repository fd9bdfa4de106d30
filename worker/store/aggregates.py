"""``trade_days`` and ``trade_months``: closed trades summed per UTC day and tenant,
and per UTC month, tenant, symbol and side. :class:`Aggregate` describes each (its
delta upsert, best/worst recompute and backfill); the rest of this docstring is
schema 3's design of ``trade_days``.

Since schema 4 the worker keeps this table itself (``worker.store.write.AggregateDeltas``:
one upsert per day and tenant per batch, computed from the trade rows it
merges) and the triggers below are dropped; schema 3 still creates them, as it
did, so that every database walks the same steps. What follows is schema 3's
design.

Dashboards ask for sums over all of history (P&L all time, per plugin, the
history summary). With a million trades a scan of even a covering index is too
slow for a dashboard (docs/benchmark.md); this table has one row per (UTC day, account, source,
plugin, mode, strategy), so the same answers read a few thousand rows.

The worker keeps it exact inside its own transaction: for every trade row a batch
changes, :class:`worker.store.write.AggregateDeltas` takes out what the row counted
before and adds what it counts now, one upsert per bucket per batch (schema
version 3 did this with triggers; version 4 dropped them, as they cost more per
trade than the deltas). Best and worst are recomputed for a bucket when the trade
that held them goes; a rebuild sums every bucket afresh.
A day whose trades all went keeps a row with ``trades = 0``; readers skip it.
A trade counts when ``status = 'closed'`` and ``closed_at`` is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

BUCKET = ("account", "source", "plugin_id", "mode", "strategy")

CREATE = """CREATE TABLE trade_days (
    day TEXT NOT NULL,
    account TEXT NOT NULL,
    source TEXT NOT NULL,
    plugin_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    strategy TEXT NOT NULL,
    trades INTEGER NOT NULL,
    wins INTEGER NOT NULL,
    losses INTEGER NOT NULL,
    gross_profit REAL NOT NULL,
    gross_loss REAL NOT NULL,
    best REAL,
    worst REAL,
    PRIMARY KEY (day, account, source, plugin_id, mode, strategy)
) WITHOUT ROWID"""


def _bucket(r: str) -> list[str]:
    """The bucket key of trade row ``r`` (OLD, NEW or an alias), in BUCKET order."""
    return [f"substr({r}.closed_at, 1, 10)"] + [f"coalesce({r}.{c}, '')" for c in BUCKET]


def _match(r: str) -> str:
    cols = ["day", *BUCKET]
    return " AND ".join(f"trade_days.{c} = {v}" for c, v in zip(cols, _bucket(r), strict=True))


def _closed(r: str) -> str:
    return f"{r}.status = 'closed' AND {r}.closed_at IS NOT NULL"


def _add(r: str) -> str:
    pnl = f"{r}.realized_pnl"
    values = [
        *_bucket(r),
        "1",
        f"coalesce({pnl} > 0, 0)",
        f"coalesce({pnl} < 0, 0)",
        f"max(coalesce({pnl}, 0), 0)",
        f"min(coalesce({pnl}, 0), 0)",
        pnl,
        pnl,
    ]
    return f"""INSERT INTO trade_days (day, {", ".join(BUCKET)}, trades, wins, losses,
        gross_profit, gross_loss, best, worst)
    SELECT {", ".join(values)} WHERE {_closed(r)}
    ON CONFLICT (day, {", ".join(BUCKET)}) DO UPDATE SET trades = trades + 1,
        wins = wins + excluded.wins, losses = losses + excluded.losses,
        gross_profit = gross_profit + excluded.gross_profit,
        gross_loss = gross_loss + excluded.gross_loss,
        best = CASE WHEN best IS NULL OR excluded.best > best THEN excluded.best ELSE best END,
        worst = CASE WHEN worst IS NULL OR excluded.worst < worst THEN excluded.worst ELSE worst
        END;"""


def _remove(r: str, source: str) -> str:
    """Statements taking row ``r`` out of its day; ``source`` supplies ``r`` if needed."""
    pnl = f"{r}.realized_pnl"
    others = " AND ".join(
        [
            "t.status = 'closed'",
            "t.closed_at >= trade_days.day",
            "t.closed_at < date(trade_days.day, '+1 day')",
            *(f"coalesce(t.{c}, '') = trade_days.{c}" for c in BUCKET),
            f"NOT (t.source = {r}.source AND t.trade_id = {r}.trade_id)",
        ]
    )
    return f"""UPDATE trade_days SET trades = trades - 1,
        wins = wins - coalesce({pnl} > 0, 0), losses = losses - coalesce({pnl} < 0, 0),
        gross_profit = gross_profit - max(coalesce({pnl}, 0), 0),
        gross_loss = gross_loss - min(coalesce({pnl}, 0), 0)
    {source} WHERE {_match(r)} AND {_closed(r)};
    UPDATE trade_days SET
        best = (SELECT max(t.realized_pnl) FROM trades t WHERE {others}),
        worst = (SELECT min(t.realized_pnl) FROM trades t WHERE {others})
    {source} WHERE {_match(r)} AND {_closed(r)}
        AND ({pnl} = trade_days.best OR {pnl} = trade_days.worst);"""


# The store writes rows with an upsert (INSERT ... ON CONFLICT DO UPDATE), so a
# stored row changes through the UPDATE trigger; INSERT OR REPLACE is not used.
TRIGGERS = [
    f"""CREATE TRIGGER trade_days_insert AFTER INSERT ON trades
WHEN NEW.status = 'closed' AND NEW.closed_at IS NOT NULL BEGIN
    {_add("NEW")}
END""",
    f"""CREATE TRIGGER trade_days_update AFTER UPDATE ON trades BEGIN
    {_remove("OLD", "")}
    {_add("NEW")}
END""",
    f"""CREATE TRIGGER trade_days_delete AFTER DELETE ON trades BEGIN
    {_remove("OLD", "")}
END""",
]

SUMS = ("trades", "wins", "losses", "gross_profit", "gross_loss", "best", "worst")
# Per-plugin and per-strategy sums walk these in order instead of sorting.
_SUMS = ", ".join(SUMS)
INDEXES = [
    f"CREATE INDEX trade_days_plugin ON trade_days(plugin_id, {_SUMS})",
    f"CREATE INDEX trade_days_strategy ON trade_days(strategy, {_SUMS})",
]

TRIGGER_NAMES = ("trade_days_insert", "trade_days_update", "trade_days_delete")


# Schema 5: the same sums per UTC month, tenant, symbol and side, for the filters
# trade_days cannot answer (a symbol, a side). A month rather than a day, so that the
# table stays a few rows per thousand trades even when every bot trades every symbol
# both ways. Its CREATE stays written out, as every migration's DDL does.
MONTH_BUCKET = (*BUCKET, "symbol", "side")

CREATE_MONTHS = """CREATE TABLE trade_months (
    month TEXT NOT NULL,
    account TEXT NOT NULL,
    source TEXT NOT NULL,
    plugin_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    strategy TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    trades INTEGER NOT NULL,
    wins INTEGER NOT NULL,
    losses INTEGER NOT NULL,
    gross_profit REAL NOT NULL,
    gross_loss REAL NOT NULL,
    best REAL,
    worst REAL,
    PRIMARY KEY (month, account, source, plugin_id, mode, strategy, symbol, side)
) WITHOUT ROWID"""


@dataclass(frozen=True, eq=False)  # two of them, compared and hashed by identity
class Aggregate:
    """A table of closed trades summed per UTC period and bucket, which the worker keeps
    with deltas (``worker.store.write.AggregateDeltas``) and a rebuild sums afresh.

    ``width`` characters of ``closed_at`` name the period; ``start`` and ``end`` are the
    SQL of a row's first instant and the next period's, from its ``period`` column.
    """

    table: str
    period: str
    width: int
    bucket: tuple[str, ...]
    start: str
    end: str

    @property
    def key(self) -> tuple[str, ...]:
        return (self.period, *self.bucket)

    def contribution(self, row: dict[str, Any] | None) -> tuple[tuple[Any, ...], Any] | None:
        """(bucket key, P&L) of a trade row that counts here; None if it does not."""
        if row is None or row["status"] != "closed" or row["closed_at"] is None:
            return None
        key = (row["closed_at"][: self.width], *(row[c] or "" for c in self.bucket))
        return key, row["realized_pnl"]

    @cached_property
    def add_sql(self) -> str:
        """Add one bucket's deltas (parameters: key, then SUMS)."""
        key = ", ".join(self.key)
        return f"""INSERT INTO {self.table} ({key}, {", ".join(SUMS)})
VALUES ({", ".join("?" * (len(self.key) + len(SUMS)))})
ON CONFLICT ({key}) DO UPDATE SET trades = trades + excluded.trades,
    wins = wins + excluded.wins, losses = losses + excluded.losses,
    gross_profit = gross_profit + excluded.gross_profit,
    gross_loss = gross_loss + excluded.gross_loss,
    best = CASE WHEN excluded.best IS NOT NULL AND (best IS NULL OR excluded.best > best)
        THEN excluded.best ELSE best END,
    worst = CASE WHEN excluded.worst IS NOT NULL AND (worst IS NULL OR excluded.worst < worst)
        THEN excluded.worst ELSE worst END"""

    @cached_property
    def recompute_sql(self) -> str:
        """After a counted trade left a bucket (its P&L changed, it reopened, it moved),
        find the bucket's best and worst again among its trades, if the P&L that left was
        one of them (parameters: key, then that P&L twice): otherwise they still hold, and
        the scan of the period's closed trades is skipped."""
        t = self.table
        trades = " AND ".join(
            [
                f"+t.source = {t}.source",  # "+": by the closed_at range, not the key
                "t.status = 'closed'",
                f"t.closed_at >= {self.start}",
                f"t.closed_at < {self.end}",
                *(f"coalesce(t.{c}, '') = {t}.{c}" for c in self.bucket if c != "source"),
            ]
        )
        return f"""UPDATE {t} SET
    best = (SELECT max(t.realized_pnl) FROM trades t WHERE {trades}),
    worst = (SELECT min(t.realized_pnl) FROM trades t WHERE {trades})
WHERE {" AND ".join(f"{c} = ?" for c in self.key)} AND (best = ? OR worst = ?)"""

    @cached_property
    def backfill_sql(self) -> str:
        """Sum every closed trade into the (empty) table."""
        key = [f"substr(closed_at, 1, {self.width})", *(f"coalesce({c}, '')" for c in self.bucket)]
        return f"""INSERT INTO {self.table} ({", ".join(self.key)}, {", ".join(SUMS)})
SELECT {", ".join(key)}, count(*), sum(coalesce(realized_pnl > 0, 0)),
    sum(coalesce(realized_pnl < 0, 0)),
    total(max(coalesce(realized_pnl, 0), 0)), total(min(coalesce(realized_pnl, 0), 0)),
    max(realized_pnl), min(realized_pnl)
FROM trades WHERE {_closed("trades")}
GROUP BY {", ".join(key)}"""


DAYS = Aggregate(
    "trade_days", "day", 10, BUCKET, "trade_days.day", "date(trade_days.day, '+1 day')"
)
MONTHS = Aggregate(
    "trade_months",
    "month",
    7,
    MONTH_BUCKET,
    "trade_months.month || '-01'",
    "date(trade_months.month || '-01', '+1 month')",
)
AGGREGATES = (DAYS, MONTHS)
BACKFILL = DAYS.backfill_sql
BACKFILL_MONTHS = MONTHS.backfill_sql
# Schema 3 (trade_days with its triggers; schema 4 drops them).
MIGRATION = [CREATE, *TRIGGERS, BACKFILL, *INDEXES]
# Both tables summed afresh from the trades (a rebuild, rows put in directly).
RESUM = [sql for a in AGGREGATES for sql in (f"DELETE FROM {a.table}", a.backfill_sql)]
