"""The model of the log-invariant property tests (``test_log_invariant.py`` on SQLite,
``test_postgres_log_invariant.py`` on PostgreSQL): the tables are a function of the
log, whatever arrives and however it is delivered.

A stateful property test (hypothesis) publishes arbitrary sequences of valid, invalid,
duplicated, conflicting, reordered and extreme events, and delivers them in arbitrary
batches, old entries again among new ones, through the worker's own decoding
(``worker.consume.decode``), planning (``worker.store.batch.plan_batch``) and writing
(``worker.store.write.write_planned``, what the write process runs) on a real SQLite file.
After every delivery:

- ``db rebuild --check``'s comparison says EQUAL (replaying the log gives the tables);
- every entry delivered so far is in the log (its event, once) or in the dead letters
  (its stream entry, once), and a dead letter is there because the entry is invalid or
  its id is in the log with another body.

``TRADESCRIBE_PROPERTY_EXAMPLES`` sets how many sequences to try (CI: 25; a longer run:
``TRADESCRIBE_PROPERTY_EXAMPLES=2000 .venv/bin/pytest tests/test_log_invariant.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import anyio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from contracts.events import WIRE_FIELD, parse_event
from worker.entries import Entry, decode
from worker.store.batch import plan_batch
from worker.store.maintenance import rebuild_check
from worker.store.schema import MIGRATIONS
from worker.store.write import Planned, RowCache, same_event, write_planned

EXAMPLES = int(os.environ.get("TRADESCRIBE_PROPERTY_EXAMPLES", "25"))
NOW = "2026-12-04T00:00:00.000000Z"

TIMES = [
    "2026-01-01T00:00:00Z",
    "2026-01-01T00:00:00.000001Z",
    "2026-01-01T01:00:00+01:00",  # the same moment as the first, another spelling
    "2025-12-31T23:59:59-12:00",
    "9999-12-31T23:59:59+14:00",  # extreme but valid
    "0001-01-02T00:00:00-12:00",
    "9999-12-31T23:59:59-01:00",  # no UTC equivalent: invalid
    "1764000000",  # a number: invalid
]
AMOUNTS = ["1", "0.1", "1e-30", "99999999999999999999999999999", "1e-31", "NaN", "-5", "12.5"]
TRADE_FIELDS = {
    "trade.opened": {"symbol": "BTCUSDT", "side": "buy", "quantity": "1", "entry_price": "100"},
    "trade.updated": {"current_price": "101"},
    "trade.closed": {"exit_price": "110", "realized_pnl": "10"},
}


@st.composite
def events(draw: st.DrawFn, ids: st.SearchStrategy[str]) -> dict[str, Any]:
    kind = draw(st.sampled_from([*TRADE_FIELDS, "signal.emitted", "position.updated",
                                 "daily_stats.updated", "journal.entry"]))  # fmt: skip
    source = draw(st.sampled_from(["bot-a", "bot-b"]))
    if kind in TRADE_FIELDS:
        data: dict[str, Any] = {"trade_id": draw(st.sampled_from(["T1", "T2"])),
                                **TRADE_FIELDS[kind]}  # fmt: skip
        if draw(st.booleans()):
            field = draw(st.sampled_from(["quantity", "realized_pnl", "fees", "stop_loss"]))
            data[field] = draw(st.sampled_from(AMOUNTS))
        if draw(st.booleans()):
            data["status"] = draw(st.sampled_from(["open", "partial", "closed", "cancelled"]))
    elif kind == "signal.emitted":
        data = {"signal_id": "S1", "symbol": "ETHUSDT", "side": "sell",
                "confidence": draw(st.sampled_from(["1", "100", "101"]))}  # fmt: skip
    elif kind == "position.updated":
        data = {"symbol": "BTCUSDT", "quantity": draw(st.sampled_from(AMOUNTS))}
    elif kind == "daily_stats.updated":
        data = {"date": draw(st.sampled_from(["2026-01-01", "9999-12-31", "0001-01-01"])),
                "total_realized_pnl": draw(st.sampled_from(AMOUNTS))}  # fmt: skip
    else:
        data = {"text": draw(st.sampled_from(["note", "x\u0000y", "ünïcode"]))}
    if draw(st.integers(0, 9)) == 0:
        data["extra"] = draw(st.sampled_from([1.5, "NaN", [1, {"deep": True}]]))
    return {
        "id": draw(ids),
        "source": source,
        "type": kind,
        "ts": draw(st.sampled_from(TIMES)),
        "account": draw(st.sampled_from(["ACC-1", "ACC-2"])),
        "data": data,
    }


# Few ids, so that reuse (duplicates, conflicts, case variants) is common.
ID_BASE = [f"0190a0b0-0000-7000-8000-00000000000{i}" for i in range(6)]
IDS = st.sampled_from(ID_BASE).flatmap(lambda i: st.sampled_from([i, i.upper()]))


def wire(event: dict[str, Any]) -> bytes:
    text = json.dumps(event)
    return text.replace('"NaN"', "NaN").encode()  # a JSON NaN literal, as a crafted entry has


def valid(raw: bytes) -> bool:
    try:
        parse_event(raw)
        return True
    except ValueError:
        return False


class Scribe(RuleBasedStateMachine):
    """The worker's pipeline from decode to commit, on one SQLite file."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="tradescribe-prop-"))
        self.db = self.dir / "scribe.db"
        self.con = sqlite3.connect(self.db, isolation_level=None)
        self.con.execute("PRAGMA journal_mode = WAL")
        for statements in MIGRATIONS:
            for sql in statements:
                self.con.execute(sql)
        self.con.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        self.cache = RowCache(self.con, 3)  # tiny: rows come from the cache and the file
        self.published: list[Entry] = []
        self.delivered: dict[str, bytes] = {}
        self.next_ms = 1

    def teardown(self) -> None:
        self.con.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _publish(self, raw: bytes) -> None:
        self.published.append((f"{self.next_ms}-0", {WIRE_FIELD.encode(): raw}))
        self.next_ms += 1

    @initialize(event=events(IDS))
    def first(self, event: dict[str, Any]) -> None:
        self._publish(wire(event))

    @rule(event=events(IDS))
    def publish(self, event: dict[str, Any]) -> None:
        self._publish(wire(event))

    @rule(data=st.data())
    def publish_again(self, data: st.DataObject) -> None:
        """A copy of an earlier body under a new stream id (a spool replay, a re-import)."""
        _, fields = data.draw(st.sampled_from(self.published))
        self._publish(fields[WIRE_FIELD.encode()])

    @rule(raw=st.sampled_from([b"{", b"null", b"\xff\xfe", b'{"id": 1}', b"[" * 5000]))
    def publish_garbage(self, raw: bytes) -> None:
        self._publish(raw)

    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        """A batch: some entries never delivered (in stream order, as a read returns
        them) and some delivered before (a redelivery), in any order."""
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
        self.write(planned)
        for stream_id, fields in batch:
            self.delivered[stream_id] = fields[WIRE_FIELD.encode()]

    # -- the store under test: a subclass puts another engine behind these three -------

    def write(self, planned: list[Planned]) -> None:
        for batch in planned:
            write_planned(self.con, batch, self.cache)

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        return self.con.execute(sql).fetchall()

    def rebuild_check(self) -> dict[str, Any]:
        result: dict[str, Any] = anyio.run(rebuild_check, self.db)
        return result

    @invariant()
    def tables_equal_a_replay_of_the_log(self) -> None:
        result = self.rebuild_check()
        assert result["equal"], result["tables"]

    @invariant()
    def every_entry_is_in_the_log_or_dead_letters_once(self) -> None:
        dead = dict(self.fetch("SELECT stream_id, count(*) FROM dead_letters GROUP BY 1"))
        assert all(n == 1 for n in dead.values()), dead
        logged = dict(self.fetch("SELECT event_id, body FROM events"))
        assert set(dead).isdisjoint(r[0] for r in self.fetch("SELECT stream_id FROM events"))
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


Scribe.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
