"""The SQL of the PostgreSQL store: its frozen migrations, and the SQLite statements the
engine-free planner (``worker.store.write.plan_projections``) makes, in PostgreSQL's words.

The planner's statements are few and fixed (an upsert and the column UPDATEs per entity,
the aggregates' delta upsert and best/worst recompute, the append-only INSERTs), so they
are translated once each and kept: ``?`` becomes ``$n``, ``INSERT OR IGNORE`` becomes
``ON CONFLICT DO NOTHING``, SQLite's date arithmetic becomes PostgreSQL's.
"""

from __future__ import annotations

import functools
import re
from importlib.resources import files

from worker.store.aggregates import AGGREGATES, SUMS, Aggregate
from worker.store.sql import EVENT_COLUMNS


def _load() -> list[str]:
    folder = files("worker.store") / "migrations" / "postgres"
    names = sorted(f.name for f in folder.iterdir() if f.name.endswith(".sql"))
    if names != [f"{n:04d}.sql" for n in range(1, len(names) + 1)]:
        raise RuntimeError(f"migrations are numbered 0001.sql upwards without gaps: {names}")
    return [(folder / name).read_text() for name in names]


# MIGRATIONS[n - 1] (one script, run in one transaction) brings version n - 1 to n.
MIGRATIONS: list[str] = _load()
SCHEMA_VERSION = len(MIGRATIONS)

VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    applied_at TEXT NOT NULL
)"""

# The event log's rows go in through COPY into this per-session table, then one
# INSERT ... SELECT keeps the ids the log did not hold and says which they were.
STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS events_in (ord BIGINT, "
    + ", ".join(f"{c} TEXT" for c in EVENT_COLUMNS)
    + ") ON COMMIT DELETE ROWS"
)
_COLS = ", ".join(EVENT_COLUMNS)
INSERT_EVENTS = (
    f"INSERT INTO events ({_COLS}) SELECT {_COLS} FROM events_in ORDER BY ord "
    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)
STORED_BODIES = "SELECT event_id, stream_id, body FROM events WHERE event_id = ANY($1::text[])"
# $9: the partition stream ('' for the single stream): ids repeat across streams.
INSERT_DEAD = """INSERT INTO dead_letters (stream_id, event_id, raw, reason, deliveries,
    received_at, raw_size, raw_sha256, stream) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (stream, stream_id) DO NOTHING"""
# $1: 'last_stream_id', or 'last_stream_id:<partition stream>' for one partition.
SET_LAST = """INSERT INTO meta (key, value) VALUES ($1, $2)
ON CONFLICT (key) DO UPDATE SET value = excluded.value"""

# One fixed pair of keys for pg_try_advisory_lock(int, int): the one writer of a database.
# With stream partitions, each partition's writer holds it shared (so a single-stream
# worker is refused while partitions are written, and the other way round) and holds
# (PARTITION_LOCK_CLASS, p) alone: one writer per partition.
LOCK_KEYS = (0x74726164, 0x77726974)  # "trad", "writ"
PARTITION_LOCK_CLASS = 0x74727074  # "trpt"
# Taken around migrations: workers starting together migrate one after the other.
MIGRATE_LOCK_KEYS = (0x74726164, 0x6D696772)  # "trad", "migr"
LOCK_HOLDER = """SELECT a.pid, a.application_name, a.client_addr::text
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 AND l.objid = $2
  AND l.objsubid = 2 AND l.database = (SELECT oid FROM pg_database
                                       WHERE datname = current_database())"""

# SQLite's date arithmetic in the aggregates' recompute, as PostgreSQL's.
_DATES = {
    "date(trade_days.day, '+1 day')": "to_char(trade_days.day::date + 1, 'YYYY-MM-DD')",
    "date(trade_months.month || '-01', '+1 month')": (
        "to_char((trade_months.month || '-01')::date + interval '1 month', 'YYYY-MM-DD')"
    ),
}
_MARK = re.compile(r"\?")


def _numbered(sql: str) -> str:
    counter = iter(range(1, 10_000))
    return _MARK.sub(lambda _: f"${next(counter)}", sql)


def add_sql(a: Aggregate) -> str:
    """:attr:`Aggregate.add_sql` with the stored row named (``a``): PostgreSQL finds a bare
    column ambiguous in ``ON CONFLICT DO UPDATE``, where SQLite takes the stored one."""
    key = ", ".join(a.key)
    return f"""INSERT INTO {a.table} AS a ({key}, {", ".join(SUMS)})
VALUES ({", ".join("?" * (len(a.key) + len(SUMS)))})
ON CONFLICT ({key}) DO UPDATE SET trades = a.trades + excluded.trades,
    wins = a.wins + excluded.wins, losses = a.losses + excluded.losses,
    gross_profit = a.gross_profit + excluded.gross_profit,
    gross_loss = a.gross_loss + excluded.gross_loss,
    best = CASE WHEN excluded.best IS NOT NULL AND (a.best IS NULL OR excluded.best > a.best)
        THEN excluded.best ELSE a.best END,
    worst = CASE WHEN excluded.worst IS NOT NULL AND (a.worst IS NULL OR excluded.worst < a.worst)
        THEN excluded.worst ELSE a.worst END"""


_REWRITTEN = {a.add_sql: add_sql(a) for a in AGGREGATES}


@functools.cache
def translate(sql: str) -> str:
    """One of the planner's SQLite statements as PostgreSQL runs it (cached: few exist)."""
    out = _REWRITTEN.get(sql, sql)
    if out.startswith("INSERT OR IGNORE INTO"):
        out = "INSERT INTO" + out[len("INSERT OR IGNORE INTO") :] + " ON CONFLICT DO NOTHING"
    if out.startswith("INSERT INTO audit_log"):
        out = re.sub(r"\buser\b", '"user"', out, count=1)
    for sqlite_sql, pg_sql in _DATES.items():
        out = out.replace(sqlite_sql, pg_sql)
    out = out.replace("+t.source", "t.source")  # SQLite's "not by this index"
    return _numbered(out)


def backfill_sql(a: Aggregate) -> str:
    """Sum every closed trade into ``a``'s (empty) table, as a rebuild does."""
    key = [f"substr(closed_at, 1, {a.width})", *(f"coalesce({c}, '')" for c in a.bucket)]
    pnl = "realized_pnl"
    return f"""INSERT INTO {a.table} ({", ".join(a.key)}, {", ".join(SUMS)})
SELECT {", ".join(key)}, count(*), count(*) FILTER (WHERE {pnl} > 0),
    count(*) FILTER (WHERE {pnl} < 0),
    coalesce(sum(greatest(coalesce({pnl}, 0), 0)), 0),
    coalesce(sum(least(coalesce({pnl}, 0), 0)), 0), max({pnl}), min({pnl})
FROM trades WHERE status = 'closed' AND closed_at IS NOT NULL
GROUP BY {", ".join(key)}"""


RESUM = [sql for a in AGGREGATES for sql in (f"DELETE FROM {a.table}", backfill_sql(a))]
