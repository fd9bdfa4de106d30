"""The tables are a function of the log on PostgreSQL too: tests/test_log_invariant.py's
stateful property (arbitrary valid, invalid, duplicated, conflicting, reordered and
extreme events, delivered in arbitrary batches, old entries again among new ones),
written through :class:`worker.store.postgres.PostgresStore` instead of the SQLite
writer. After every delivery ``db rebuild --check`` says EQUAL, and every entry is in
the log once or in the dead letters once, for the reason SQLite has.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import asyncpg
import pytest

from tests.logmodel import Scribe
from tests.pgfix import migrated_database
from worker.store.pgmaint import rebuild_check
from worker.store.postgres import PROJECTION_TABLES, PostgresStore
from worker.store.write import Planned

pytestmark = pytest.mark.timeout(600)

_URL: list[str] = []  # the module's database, emptied before each example


@pytest.fixture(autouse=True, scope="module")
def _database(postgres_admin_url: str) -> Iterator[None]:
    _URL.append(migrated_database(postgres_admin_url))
    yield
    _URL.clear()


async def _empty(url: str) -> None:
    tables = ", ".join(("events", "dead_letters", "meta", "trade_days", "trade_months",
                        *PROJECTION_TABLES))  # fmt: skip
    con = await asyncpg.connect(url)
    try:
        await con.execute(f"TRUNCATE {tables} RESTART IDENTITY")
    finally:
        await con.close()


async def _commit(url: str, batches: list[Planned]) -> None:
    store = await PostgresStore.open(url)
    try:
        await store.migrate()  # creates the session's staging table
        for planned in batches:
            await store.commit_planned(planned)
    finally:
        await store.close()


async def _fetch(url: str, sql: str) -> list[tuple[Any, ...]]:
    con = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await con.fetch(sql)]
    finally:
        await con.close()


class PgScribe(Scribe):
    """Scribe's rules; the batches written to PostgreSQL (the SQLite file stays unused)."""

    def __init__(self) -> None:
        super().__init__()
        self.url = _URL[0]
        anyio.run(_empty, self.url)

    def write(self, planned: list[Planned]) -> None:
        anyio.run(_commit, self.url, planned)

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        return anyio.run(_fetch, self.url, sql)

    def rebuild_check(self) -> dict[str, Any]:
        result: dict[str, Any] = anyio.run(rebuild_check, self.url)
        return result


PgScribe.TestCase.settings = Scribe.TestCase.settings
test_postgres_tables_are_a_function_of_the_log = PgScribe.TestCase
