"""``trade_days`` and ``trade_months``: closed trades summed per UTC day and tenant,
and per UTC month, tenant, symbol and side. :class:`Aggregate` describes each (its
delta upsert, best/worst recompute and backfill); their tables are created by the
frozen migrations (``worker/store/migrations/0003.sql``, ``0005.sql``).

Dashboards ask for sums over all of history (P&L all time, per plugin, the history
summary). With a million trades a scan of even a covering index is too slow for a
dashboard (docs/benchmark.md); these tables have one row per bucket, so the same
answers read a few thousand rows.

The worker keeps them exact inside its own transaction: for every trade row a batch
changes, :class:`worker.store.write.AggregateDeltas` takes out what the row counted
before and adds what it counts now, one upsert per bucket per batch (schema version 3
did this with triggers; version 4 dropped them, as they cost more per trade than the
deltas). Best and worst are recomputed for a bucket when the trade that held them
goes; a rebuild sums every bucket afresh. A bucket whose trades all went keeps a row
with ``trades = 0``; readers skip it. A trade counts when ``status = 'closed'`` and
``closed_at`` is set.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from contracts.vocabulary import SETTLED_CHANGED as SETTLED_CHANGED

BUCKET = ("account", "source", "plugin_id", "mode", "strategy")


def _closed(r: str) -> str:
    return f"{r}.status = 'closed' AND {r}.closed_at IS NOT NULL"


SUMS = ("trades", "wins", "losses", "gross_profit", "gross_loss", "best", "worst")
# trade_months: the same sums per UTC month, tenant, symbol and side, for the filters
# trade_days cannot answer (a symbol, a side); a month rather than a day keeps the
# table at a few rows per thousand trades. Both tables' DDL is in the frozen
# migrations (worker/store/migrations/0003.sql, 0005.sql).
MONTH_BUCKET = (*BUCKET, "symbol", "side")


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

# The sums of days before yesterday settle; what still changes one of them (a late
# close, an import of history, a rebuild) bumps this ``meta`` row in the same
# transaction, so a reader may keep sums of earlier periods across commits under its
# value (``contracts.query_stats``: ``serve`` keeps the months before two days ago).
BUMP_SETTLED = (
    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
    "value = CAST(CAST(meta.value AS INTEGER) + 1 AS TEXT)"
)


def settled_from(today: dt.date) -> str:
    """The first day whose sums are not settled yet: a change to a period before it
    bumps :data:`SETTLED_CHANGED`."""
    return (today - dt.timedelta(days=1)).isoformat()


def touches_settled(periods: Iterable[str], today: dt.date) -> bool:
    """Whether any of these days ('YYYY-MM-DD') or months ('YYYY-MM') lies before
    :func:`settled_from`: a month only when it ends before that day's month (a month
    read as a whole by a reader ends before its cut, two days ago at the latest)."""
    first = settled_from(today)
    return any(p < first[: len(p)] for p in periods)


# Both tables summed afresh from the trades (a rebuild, rows put in directly).
RESUM = [sql for a in AGGREGATES for sql in (f"DELETE FROM {a.table}", a.backfill_sql)]
