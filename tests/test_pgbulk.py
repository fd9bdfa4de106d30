"""The PostgreSQL store's INSERTs over column arrays (worker/store/pgbulk.py): every INSERT
the planner makes goes that way, and it leaves exactly the rows ``executemany`` leaves,
for any rows (repeated keys, NULLs, repeats of an append-only row), on a real PostgreSQL
this suite starts."""

from __future__ import annotations

import datetime as dt
from typing import Any

import anyio
import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.workload import wire_events
from contracts.events import WIRE_FIELD
from tests.pgfix import migrated_database
from worker.entries import decode
from worker.store import batch as batch_sql
from worker.store import pgbulk, pgsql
from worker.store.aggregates import DAYS
from worker.store.postgres import _Fetched, _run
from worker.store.projections import utc_text
from worker.store.write import plan_projections

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def pg_db(postgres_admin_url: str) -> str:
    """One migrated database for the module (each example works in a transaction it
    rolls back)."""
    return migrated_database(postgres_admin_url)


async def _types(url: str) -> pgbulk.ColumnTypes:
    con = await asyncpg.connect(url)
    try:
        return pgbulk.column_types(await con.fetch(pgbulk.COLUMN_TYPES_SQL))
    finally:
        await con.close()


def test_every_insert_the_planner_makes_is_one_statement_and_no_update_is(pg_db: str) -> None:
    types = anyio.run(_types, pg_db)
    bodies = [b.encode() for b in wire_events(3000)]
    entries = [(f"{i + 1}-0", {WIRE_FIELD.encode(): b}) for i, b in enumerate(bodies)]
    good, dead, _ = decode(entries, {}, 1 << 20)
    planned = batch_sql.plan_batch(good, dead, utc_text(dt.datetime.now(dt.UTC)))
    statements = [
        *plan_projections(planned.changes, _Fetched({})),
        *planned.appends,
        (batch_sql._INSERT_AUDIT, []),
    ]
    inserts = {pgsql.translate(sql) for sql, _ in statements if sql.lstrip().startswith("INSERT")}
    tables = {sql.split()[2] for sql in inserts}
    # the four entities, both aggregates and the three append-only tables
    assert {"trades", "signals", "positions", "daily_stats", "trade_days", "trade_months",
            "trade_status_history", "journal_entries", "audit_log"} <= tables  # fmt: skip
    for sql in inserts:
        bulk = pgbulk.bulk_of(sql, types)
        assert bulk is not None, sql
        assert "unnest(" in bulk.sql
        assert "VALUES" not in bulk.sql
        assert bool(bulk.key) == ("DO UPDATE" in sql), sql
    updates = [pgsql.translate(sql) for sql, _ in statements if sql.lstrip().startswith("UPDATE")]
    assert all(pgbulk.bulk_of(sql, types) is None for sql in updates)


_DAY_SQL = pgsql.translate(DAYS.add_sql)
_STATUS_SQL = pgsql.translate(batch_sql._INSERT_STATUS)

_text = st.sampled_from(["a", "b", "", "ß€", "x'y"])
_money = st.one_of(st.none(), st.floats(-1e9, 1e9, allow_nan=False, width=64))
_count = st.integers(0, 10**6)
_sum = st.floats(-1e9, 1e9, allow_nan=False, width=64)
_day = st.sampled_from(["2026-01-01", "2026-01-02"])
# trade_days: day, account, source, plugin, mode, strategy, then the sums
_day_rows = st.lists(
    st.tuples(_day, _text, _text, _text, _text, _text, _count, _count, _count, _sum, _sum,
              _money, _money),
    max_size=30,
)  # fmt: skip
_at = st.sampled_from(["2026-01-01T00:00:00Z"])
_event_id = st.sampled_from(["e1", "e2", "e3"])
_status_rows = st.lists(st.tuples(_event_id, _text, _text, _text, _at, _text), max_size=30)


async def _after(url: str, bulk: bool, statements: list[tuple[str, list[Any]]]) -> list[Any]:
    """The two tables' rows after these statements (rolled back after)."""
    con = await asyncpg.connect(url)
    try:
        tx = con.transaction()
        await tx.start()
        try:
            if bulk:
                await _run(con, statements)
            else:
                for sql, rows in statements:
                    if rows:
                        await con.executemany(pgsql.translate(sql), rows)
            # Sorted whole: rows that tie on a few columns come back in either order.
            return [
                sorted((tuple(r) for r in await con.fetch(f"SELECT * FROM {table}")), key=repr)
                for table in ("trade_days", "trade_status_history")
            ]
        finally:
            await tx.rollback()
    finally:
        await con.close()


_FIXTURE_OK = [HealthCheck.function_scoped_fixture]  # the database is one, examples roll back


@settings(max_examples=60, deadline=None, suppress_health_check=_FIXTURE_OK)
@given(first=_day_rows, second=_day_rows, status=_status_rows)
def test_bulk_statements_leave_exactly_the_rows_executemany_leaves(
    pg_db: str, first: list[Any], second: list[Any], status: list[Any]
) -> None:
    # Two delta upserts (the second adds to rows the first made; a key repeated within
    # one goes row by row, as PostgreSQL wants) and append-only rows with repeats.
    statements = [(DAYS.add_sql, first), (DAYS.add_sql, second),
                  (batch_sql._INSERT_STATUS, status)]  # fmt: skip
    assert anyio.run(_after, pg_db, True, statements) == anyio.run(_after, pg_db, False, statements)


def test_a_repeated_conflict_key_is_run_row_by_row(pg_db: str) -> None:
    types = anyio.run(_types, pg_db)
    bulk = pgbulk.bulk_of(_DAY_SQL, types)
    assert bulk is not None
    row = ("2026-01-01", "A", "s", "p", "paper", "", 1, 1, 0, 5.0, 0.0, 5.0, None)
    assert pgbulk.repeats_a_key(bulk, [row, row])
    assert not pgbulk.repeats_a_key(bulk, [row, (*row[:1], "B", *row[2:])])
    # and the store takes such a batch: the rows add up
    days, _ = anyio.run(_after, pg_db, True, [(DAYS.add_sql, [row, row])])
    assert [(d[6], d[9]) for d in days] == [(2, 10.0)]
    status_bulk = pgbulk.bulk_of(_STATUS_SQL, types)
    assert status_bulk is not None
    assert status_bulk.key == ()
