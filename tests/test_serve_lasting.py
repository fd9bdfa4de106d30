"""serve keeps a bot's last close across commits (``worker/http/memo.py`` ``Lasting``,
under the number of the bot's events) and counts the log's events once for every token
(``worker/http/reads.py`` ``_log``). Whatever the commits in between (closes on any day,
near a local midnight, P&L amended, closes moved, within their day too, events of other
tenants), each answer is the one a server with nothing kept gives."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.ceiling import create_schema
from contracts import query_stats
from contracts.query_model import utc_text
from worker.http import memo, reads, seed
from worker.http.tokens import Principal
from worker.store import aggregates
from worker.store.write import AggregateDeltas

ADMIN = Principal("a", "admin", (), (), publish=False, admin=True)
TENANT = Principal("t", "tenant", ("ACC-1",), (), publish=False, admin=False)
ONE_BOT = Principal("b", "one bot", ("ACC-1", "ACC-2"), ("bot-1",), publish=False, admin=False)
PRINCIPALS = (ADMIN, TENANT, ONE_BOT)
ZONES = ("Europe/Berlin", "Asia/Kathmandu", "America/St_Johns")
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def answers(db: Path) -> dict[str, Any]:
    """What serve answers for each principal: bots, the calendar in three zones, the
    dashboard's data and the health strip (less the age of the last commit, which moves
    with the clock)."""
    out: dict[str, Any] = {}
    for p in PRINCIPALS:
        out[f"{p.name} bots"] = reads.clean(reads.bots(db, p, {}))
        for zone in ZONES:
            out[f"{p.name} calendar {zone}"] = reads.run_scoped(db, p, "calendar", {"tz": zone})
        out[f"{p.name} dashboard"] = seed.dashboard_data(db, p, {"tz": "Europe/Berlin"})
        health = reads.health(db, p)
        health.pop("last_commit_age_s")
        out[f"{p.name} health"] = health
    return out


@contextmanager
def nothing_kept() -> Iterator[None]:
    """A server that has kept nothing yet; what was kept is back afterwards."""
    files, logs = dict(memo._FILES), dict(reads._LOGS)
    memo._FILES.clear()
    reads._LOGS.clear()
    try:
        yield
    finally:
        for kept in memo._FILES.values():
            kept.close()
        memo._FILES.clear()
        memo._FILES.update(files)
        reads._LOGS.clear()
        reads._LOGS.update(logs)


class Book:
    """A database the test writes as the worker would: trades, their sums changed by the
    worker's own deltas (with its mark of a change to the settled sums), and an event in
    the log for each change, in one transaction per commit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        con = sqlite3.connect(path)
        create_schema(con)
        con.close()
        self.trades: list[tuple[str, str]] = []  # (source, trade_id)

    def commit(self, changes: list[tuple[Any, ...]]) -> None:
        con = sqlite3.connect(self.path, isolation_level=None)
        con.row_factory = sqlite3.Row
        deltas = AggregateDeltas()
        try:
            con.execute("BEGIN")
            for change in changes:
                self._apply(con, deltas, *change)
            for sql, rows in deltas.statements():
                con.executemany(sql, rows)
            con.execute("COMMIT")
        finally:
            con.close()

    def _apply(self, con: sqlite3.Connection, deltas: AggregateDeltas, kind: str,
               *args: Any) -> None:  # fmt: skip
        def row(source: str, trade_id: str) -> dict[str, Any] | None:
            found = con.execute(
                "SELECT * FROM trades WHERE source = ? AND trade_id = ?", (source, trade_id)
            ).fetchone()
            return None if found is None else dict(found)

        if kind == "close":
            source, account, minutes, pnl = args
            closed = utc_text(NOW - dt.timedelta(minutes=minutes))
            trade = (source, f"T{len(self.trades)}")
            self.trades.append(trade)
            con.execute(
                """INSERT INTO trades (source, trade_id, account, plugin_id, mode, strategy,
                status, closed_at, realized_pnl, created_at, updated_at)
                VALUES (?, ?, ?, 'p', 'paper', 's', 'closed', ?, ?, ?, ?)""",
                (*trade, account, closed, pnl, closed, closed),
            )
            deltas.change(None, row(*trade))  # type: ignore[arg-type]
            self._event(con, "trade_closed", source, account, trade[1])
            return
        if not self.trades:
            return
        pick, value = args
        source, trade_id = self.trades[pick % len(self.trades)]
        before = row(source, trade_id)
        if kind == "amend":  # another P&L
            con.execute(
                "UPDATE trades SET realized_pnl = ? WHERE source = ? AND trade_id = ?",
                (value, source, trade_id),
            )
        else:  # "move": the close to another time, on its day or another
            new = utc_text(NOW - dt.timedelta(minutes=value))
            con.execute(
                "UPDATE trades SET closed_at = ? WHERE source = ? AND trade_id = ?",
                (new, source, trade_id),
            )
        after = row(source, trade_id)
        assert after is not None
        deltas.change(before, after)
        self._event(con, "trade_updated", source, after["account"], trade_id)

    def _event(self, con: sqlite3.Connection, kind: str, source: str, account: str,
               subject: str) -> None:  # fmt: skip
        at = utc_text(dt.datetime.now(dt.UTC))
        con.execute(
            """INSERT INTO events (event_id, type, source, account, plugin_id, mode, subject,
            ts, stream_id, committed_at, body) VALUES (?, ?, ?, ?, 'p', 'paper', ?, ?, '0-1', ?,
            '{}')""",
            (str(uuid.uuid4()), kind, source, account, subject, at, at),
        )


SOURCES = st.sampled_from([("bot-1", "ACC-1"), ("bot-2", "ACC-1"), ("bot-3", "ACC-2")])
PNL = st.sampled_from([-12.5, -3.25, 0.0, 1.75, 4.0, 20.5])
# up to 400 days back; many of them near a local midnight of the three zones
MINUTES = st.one_of(
    st.integers(0, 400 * 1440),
    st.builds(lambda d, m: d * 1440 + m, st.integers(0, 400), st.integers(-200, 200)).filter(
        lambda m: m >= 0
    ),
)
CHANGE = st.one_of(
    st.builds(lambda s, m, p: ("close", s[0], s[1], m, p), SOURCES, MINUTES, PNL),
    st.tuples(st.just("amend"), st.integers(0, 50), PNL),
    st.tuples(st.just("move"), st.integers(0, 50), MINUTES),
)


@settings(max_examples=30, deadline=None)
@given(commits=st.lists(st.lists(CHANGE, min_size=1, max_size=4), min_size=1, max_size=6))
def test_answers_after_every_commit_are_those_of_a_server_that_kept_nothing(
    tmp_path_factory: pytest.TempPathFactory, commits: list[list[tuple[Any, ...]]]
) -> None:
    book = Book(tmp_path_factory.mktemp("lasting") / "lasting.db")
    with nothing_kept():  # this example's server starts empty, and leaves nothing behind
        book.commit([("close", "bot-1", "ACC-1", 30, 5.0), ("close", "bot-3", "ACC-2", 2000, -1.0)])
        answers(book.path)
        for changes in commits:
            book.commit(changes)
            kept = answers(book.path)
            with nothing_kept():
                fresh = answers(book.path)
            assert kept == fresh


def test_the_kept_reads_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a commit of another bot's close, an idle bot's last close is not read again
    (the property above would pass with nothing kept at all)."""
    book = Book(tmp_path / "kept.db")
    book.commit([("close", "bot-1", "ACC-1", m, 1.0) for m in range(0, 3 * 1440, 600)])
    book.commit([("close", "bot-2", "ACC-1", 15, -2.0)])
    with nothing_kept():
        answers(book.path)
        reads_made: list[Any] = []
        get = memo.Lasting.get
        monkeypatch.setattr(memo.Lasting, "get",
                            lambda self, key, read: get(self, key,
                                                        lambda: (reads_made.append(key),
                                                                 read())[1]))  # fmt: skip
        book.commit([("close", "bot-2", "ACC-1", 5, 7.0)])
        answers(book.path)
    assert {k[1][2] for k in reads_made} == {"bot-2"}, reads_made


def test_a_change_without_an_event_is_seen_when_the_kept_read_expires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What no event shows (a close time rewritten in the file, as a migration might) is
    seen once the kept read is LASTING_S old."""
    day = (NOW - dt.timedelta(days=3)).replace(hour=0, minute=0, second=0)
    ago = [int((NOW - (day + dt.timedelta(hours=h))).total_seconds() // 60) for h in (11, 10)]
    book = Book(tmp_path / "moved.db")
    book.commit([("close", "bot-1", "ACC-1", m, p) for m, p in zip(ago, (2.0, 3.0), strict=True)])
    later = utc_text(day + dt.timedelta(hours=23))
    with nothing_kept():
        before = reads.bots(book.path, ADMIN, {})[0]["last_activity"]
        assert before[:13] == utc_text(day)[:11] + "11"
        con = sqlite3.connect(book.path)
        with con:  # T1 (10:00) to 23:00 the same day, and no event for it
            con.execute("UPDATE trades SET closed_at = ? WHERE trade_id = 'T1'", (later,))
        con.close()
        assert reads.bots(book.path, ADMIN, {})[0]["last_activity"] == before  # kept
        monkeypatch.setattr(memo, "LASTING_S", 0.0)
        assert reads.bots(book.path, ADMIN, {})[0]["last_activity"] == later


def test_another_file_put_in_the_paths_place_is_counted_afresh(tmp_path: Path) -> None:
    """The health strip's counts and the kept last closes belong to the file, not to
    its path: another file moved into the path (a restore) is read afresh, even with
    more events than the one it replaced."""
    book, other = Book(tmp_path / "a.db"), Book(tmp_path / "b.db")
    book.commit([("close", "bot-1", "ACC-1", 30, 1.0)])
    other.commit([("close", "bot-2", "ACC-1", m, 2.0) for m in (5, 50, 500)])
    with nothing_kept():
        answers(book.path)
        os.replace(other.path, book.path)
        for suffix in ("-wal", "-shm"):
            Path(f"{book.path}{suffix}").unlink(missing_ok=True)
        kept = answers(book.path)
        with nothing_kept():
            assert kept == answers(book.path)
    assert kept["admin health"]["events"] == 3


def test_sums_of_settled_months_are_read_again_only_after_a_change_to_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a commit of today's close, the sums of months before the cut are not read
    again; after a late close 40 days back (the worker bumps the ``meta`` row) they
    are, and the answers are those of a server that kept nothing."""
    book = Book(tmp_path / "settled.db")
    book.commit([("close", "bot-1", "ACC-1", d * 1440, 1.5) for d in range(0, 120, 3)])
    settled_reads: list[Any] = []
    get = memo.Lasting.get

    def counted(self: memo.Lasting, key: Any, read: Any) -> Any:
        def made() -> Any:
            if isinstance(key[-1], tuple):  # keyed by the settled sums' mark
                settled_reads.append(key)
            return read()

        return get(self, key, made)

    monkeypatch.setattr(memo.Lasting, "get", counted)
    with nothing_kept():
        answers(book.path)
        assert settled_reads  # the months before the cut were read, and kept
        settled_reads.clear()
        book.commit([("close", "bot-2", "ACC-1", 5, 7.0)])
        answers(book.path)
        assert settled_reads == []
        book.commit([("close", "bot-2", "ACC-1", 40 * 1440, -3.25)])
        kept = answers(book.path)
        assert settled_reads
        with nothing_kept():
            assert kept == answers(book.path)


@pytest.mark.parametrize(
    ("today", "period", "touches"),
    [
        ("2026-12-05", "2026-12-04", False),  # yesterday: not settled yet
        ("2026-12-05", "2026-12-03", True),
        ("2026-12-05", "2026-12", False),
        ("2026-12-05", "2026-11", True),
        ("2026-12-01", "2026-11-30", False),
        ("2026-12-01", "2026-11-29", True),
        ("2026-12-01", "2026-11", False),  # its days before yesterday bump by their day
        ("2026-12-01", "2026-10", True),
        ("2026-01-01", "2025-12-30", True),
    ],
)
def test_the_worker_marks_changes_before_yesterday(today: str, period: str, touches: bool) -> None:
    assert aggregates.touches_settled([period], dt.date.fromisoformat(today)) is touches


def test_the_readers_cut_lies_a_day_before_the_workers() -> None:
    """Whatever the day, the months a reader keeps end before the worker's first
    unsettled day by at least a day."""
    day = dt.date(2024, 1, 1)
    for _ in range(800):
        cut = query_stats.settled_cut(day)
        assert cut.endswith("-01T00:00:00.000000Z")
        assert cut[:10] <= (day - dt.timedelta(days=2)).isoformat() < aggregates.settled_from(day)
        day += dt.timedelta(days=1)
