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
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule

from contracts.events import WIRE_FIELD, parse_event
from tests.logmodel import NOW, Scribe, valid
from tests.pgfix import create_database, postgres_admin_url
from worker.entries import decode
from worker.store.batch import plan_batch
from worker.store.pgmaint import rebuild_check
from worker.store.postgres import PROJECTION_TABLES, PostgresStore
from worker.store.write import same_event

__all__ = ["postgres_admin_url"]  # the fixture, for the one below
pytestmark = pytest.mark.timeout(600)

_URL: list[str] = []  # the module's database, emptied before each example


@pytest.fixture(autouse=True, scope="module")
def _database(postgres_admin_url: str) -> Iterator[None]:
    url = anyio.run(create_database, postgres_admin_url)

    async def migrate() -> None:
        store = await PostgresStore.open(url)
        try:
            await store.migrate()
        finally:
            await store.close()

    anyio.run(migrate)
    _URL.append(url)
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


async def _commit(url: str, batches: list[Any]) -> None:
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

    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        fresh = [e for e in self.published if e[0] not in self.delivered]
        new = fresh[: data.draw(st.integers(0, len(fresh)))]
        old = data.draw(
            st.lists(st.sampled_from(self.published), max_size=4, unique_by=lambda e: e[0])
        )
        old = [e for e in old if e[0] in self.delivered]
        batch = data.draw(st.permutations(new + old)) if old else new
        if not batch:
            return
        entries, planned = batch, []
        while entries:  # as the worker does: an id repeated in a read goes in the next batch
            good, dead, entries = decode(entries, {}, 65_536)
            planned.append(plan_batch(good, dead, NOW))
        anyio.run(_commit, self.url, planned)
        for stream_id, fields in batch:
            self.delivered[stream_id] = fields[WIRE_FIELD.encode()]

    @invariant()
    def tables_equal_a_replay_of_the_log(self) -> None:
        result = anyio.run(rebuild_check, self.url)
        assert result["equal"], result["tables"]

    @invariant()
    def every_entry_is_in_the_log_or_dead_letters_once(self) -> None:
        url = self.url
        counted = anyio.run(_fetch, url, "SELECT stream_id, count(*) FROM dead_letters GROUP BY 1")
        dead = dict(counted)
        assert all(n == 1 for n in dead.values()), dead
        logged = dict(anyio.run(_fetch, url, "SELECT event_id, body FROM events"))
        logged_streams = {r[0] for r in anyio.run(_fetch, url, "SELECT stream_id FROM events")}
        assert set(dead).isdisjoint(logged_streams)
        for stream_id, raw in self.delivered.items():
            if not valid(raw):
                assert stream_id in dead, (stream_id, raw)
                continue
            event_id = parse_event(raw).id
            assert event_id in logged, (stream_id, raw)
            if same_event(logged[event_id], raw.decode()):
                assert stream_id not in dead, (stream_id, raw)
            else:
                assert stream_id in dead, ("an id conflict not dead-lettered", raw)


PgScribe.TestCase.settings = Scribe.TestCase.settings
test_postgres_tables_are_a_function_of_the_log = PgScribe.TestCase
