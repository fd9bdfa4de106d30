"""The calendar in a local zone, computed the faster way, is exactly what the earlier
way computed, on random trades (hypothesis): ``daily_local`` (``trade_days`` less the
pieces of each UTC day that belong to another local day) and ``day_starts`` /
``utc_text`` against the implementations they replaced, kept below as the reference,
with trades on both sides of local midnights, in zones with :30 and :45 offsets, across
DST changes (30-minute ones, and ones at midnight), and a skipped day."""

from __future__ import annotations

import datetime as dt
import itertools
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.ceiling import create_schema
from contracts.query_db import ReadConnection
from contracts.query_model import Filters, day_start, day_starts, utc_text
from contracts.query_sql import _daily_local
from contracts.query_stats import (
    MIDNIGHT,
    _pieces_from_trades,
    daily_local,
    daily_utc,
)
from worker.store import aggregates

# (zone, a day near one of its offset changes, or any day for a fixed offset)
ZONES = [
    ("Europe/Berlin", dt.date(2026, 3, 29)),
    ("Europe/Berlin", dt.date(2026, 10, 25)),
    ("America/New_York", dt.date(2026, 11, 1)),
    ("Asia/Kolkata", dt.date(2026, 6, 1)),  # +05:30
    ("Asia/Kathmandu", dt.date(2026, 6, 1)),  # +05:45
    ("Pacific/Chatham", dt.date(2026, 4, 5)),  # +13:45 -> +12:45
    ("Australia/Lord_Howe", dt.date(2026, 10, 4)),  # a 30-minute DST change
    ("America/St_Johns", dt.date(2026, 3, 8)),  # -03:30, DST
    ("America/Santiago", dt.date(2026, 9, 6)),  # DST begins at midnight: no 00:00
    ("Asia/Beirut", dt.date(2026, 3, 29)),  # DST at midnight
    ("Pacific/Apia", dt.date(2011, 12, 30)),  # the day Samoa skipped
    ("UTC", dt.date(2026, 1, 1)),
]
ACCOUNTS = ("ACC-1", "ACC-2")
SOURCES = ("bot-a", "bot-b")


# --- the reference: the implementations before the change --------------------


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _next_day(day: str) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()


def _days_between(first: str, last: str) -> list[str]:
    out = []
    day = dt.date.fromisoformat(first)
    end = dt.date.fromisoformat(last)
    while day <= end:
        out.append(day.isoformat())
        day += dt.timedelta(days=1)
    return out


def reference_daily_local(
    con: ReadConnection, f: Filters, bounds: Sequence[str]
) -> list[tuple[int, int, float, int, int]]:
    lo, hi = bounds[0], bounds[-1]
    midnights = {d + MIDNIGHT for d in _days_between(lo[:10], hi[:10])}
    cuts = sorted(set(bounds) | {m for m in midnights if lo < m < hi})
    local = {b: i for i, b in enumerate(bounds)}
    Piece = tuple[str, str, int]
    by_day: dict[str, list[Piece]] = {}
    index = 0
    for start, end in itertools.pairwise(cuts):
        index = local.get(start, index)
        by_day.setdefault(start[:10], []).append((start, end, index))
    derived: list[Piece] = []
    read: list[Piece] = []
    for day, pieces in by_day.items():
        largest = max(pieces, key=lambda p: _utc(p[1]) - _utc(p[0]))
        derived.append(largest)
        read += [p for p in pieces if p is not largest]
        day_lo, day_hi = day + MIDNIGHT, _next_day(day) + MIDNIGHT
        if pieces[0][0] > day_lo:
            read.append((day_lo, pieces[0][0], -1))
        if pieces[-1][1] < day_hi:
            read.append((pieces[-1][1], day_hi, -1))
    whole = {r[0]: r[1:] for r in daily_utc(con, f, min(by_day), max(by_day))}
    sums: list[list[Any]] = [[0, 0.0, 0, 0] for _ in bounds[:-1]]
    taken: dict[str, list[Any]] = {}
    got = _pieces_from_trades(con, f, [(a, b) for a, b, _ in read])
    for (start, _, i), values in zip(read, got, strict=True):
        t = taken.setdefault(start[:10], [0, 0.0, 0, 0])
        for k in range(4):
            t[k] += values[k]
            if i >= 0:
                sums[i][k] += values[k]
    for start, _, i in derived:
        day_sums = whole.get(start[:10], (0, 0.0, 0, 0))
        t = taken.get(start[:10], [0, 0.0, 0, 0])
        for k in range(4):
            sums[i][k] += (day_sums[k] or 0) - t[k]
    return [(i, int(v[0]), float(v[1]), int(v[2]), int(v[3])) for i, v in enumerate(sums)]


def reference_utc_text(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- one database for every example ----------------------------------------------


@pytest.fixture(scope="module")
def db() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "days.db"
        con = sqlite3.connect(path, isolation_level=None)
        create_schema(con)
        con.close()
        yield path


def _store(path: Path, trades: list[tuple[str, str, str, float]]) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("BEGIN")
        con.execute("DELETE FROM trades")
        con.executemany(
            """INSERT INTO trades (source, trade_id, account, plugin_id, mode, strategy, status,
            closed_at, realized_pnl, created_at, updated_at)
            VALUES (?, ?, ?, 'p', 'paper', 's', 'closed', ?, ?, ?, ?)""",
            [(source, f"T{n}", account, closed, pnl, closed, closed)
             for n, (source, account, closed, pnl) in enumerate(trades)],
        )  # fmt: skip
        for sql in aggregates.RESUM:  # as a rebuild sums them (the worker keeps them equal)
            con.execute(sql)
        # and, as a rebuild does, says that settled periods changed: serve keeps the sums
        # of months before two days ago across commits under this counter
        con.execute(aggregates.BUMP_SETTLED, (aggregates.SETTLED_CHANGED, "1"))
        con.execute("COMMIT")
    finally:
        con.close()


def _read(path: Path) -> ReadConnection:
    from contracts.query_db import SQLITE

    return ReadConnection(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True), SQLITE)


# cents, as a price difference times a quantity gives them (and their binary noise)
pnls = st.builds(lambda cents, qty: cents / 100 * qty, st.integers(-50_000, 50_000),
                 st.sampled_from([1, 0.1, 3, 0.25]))  # fmt: skip
trades = st.lists(
    st.tuples(
        st.sampled_from(SOURCES),
        st.sampled_from(ACCOUNTS),
        # minutes around the zone's day: local midnights on either side of UTC ones
        st.integers(-6 * 24 * 60, 10 * 24 * 60),
        st.integers(0, 59_999_999),  # microseconds within the minute
        pnls,
    ),
    max_size=80,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    zone_day=st.sampled_from(ZONES),
    raw=trades,
    start=st.integers(-4, 3),
    span=st.integers(0, 9),
    scoped=st.booleans(),
)
def test_daily_local_equals_the_earlier_way(
    db: Path, zone_day: tuple[str, dt.date], raw: list[Any], start: int, span: int, scoped: bool
) -> None:
    tz, day = zone_day
    base = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    rows = [(source, account,
             utc_text(base + dt.timedelta(minutes=minute, microseconds=micros)), pnl)
            for source, account, minute, micros, pnl in raw]  # fmt: skip
    _store(db, rows)
    f = Filters(tz=tz)
    if scoped:
        f = f.model_copy(update={"scope_accounts": ("ACC-1",)})
    zone = ZoneInfo(tz)
    since = day + dt.timedelta(days=start)
    days = [since + dt.timedelta(days=i) for i in range(span + 2)]
    old_bounds = [day_start(d, zone) for d in days]
    assert old_bounds == [reference_utc_text(dt.datetime.combine(d, dt.time(), tzinfo=zone))
                          for d in days]  # fmt: skip
    bounds = day_starts(since, span + 2, zone)
    assert bounds == old_bounds
    con = _read(db)
    try:
        new = daily_local(con, f, bounds)
        if bounds[0] == bounds[-1]:  # Samoa's skipped day alone: no time, no trades
            # (the reference failed on it: min() of no UTC days; the calendar said 500)
            assert new == [(i, 0, 0.0, 0, 0) for i in range(span + 1)]
        else:
            assert new == reference_daily_local(con, f, bounds)
        # and the counts are those of the trades themselves, local day by local day
        straight = {r[0]: r for r in _daily_local(con, f, since, since + dt.timedelta(days=span))}
        for i, trades_, pnl, wins, losses in new:
            found = straight.get(days[i].isoformat(), (None, 0, 0.0, 0, 0))
            assert (trades_, wins, losses) == (found[1], found[3], found[4])
            assert pnl == pytest.approx(found[2], abs=1e-6)
    finally:
        con.con.close()


# Zones whose local days are not 24 hours, with a day near a change: the skipped days
# (Samoa 2011, Kwajalein 1993), DST at midnight (Havana, Sao Paulo), :30/:45 offsets.
ODD_ZONES = [
    *ZONES,
    ("Pacific/Kwajalein", dt.date(1993, 8, 21)),  # skipped, from -12 to +12
    ("America/Havana", dt.date(2026, 3, 8)),  # DST at midnight
    ("America/Havana", dt.date(2026, 11, 1)),  # back at 01:00 to 00:00: midnight twice
    ("America/Sao_Paulo", dt.date(2018, 11, 4)),  # DST at midnight
    ("America/Sao_Paulo", dt.date(2019, 2, 17)),
    ("Asia/Kathmandu", dt.date(1986, 1, 1)),  # +05:30 -> +05:45
    ("America/St_Johns", dt.date(2026, 11, 1)),
    ("Africa/Casablanca", dt.date(2026, 2, 15)),  # Ramadan's hour
]


def _by_local_day(
    rows: list[tuple[str, str, str, float]], zone: ZoneInfo, first: dt.date, last: dt.date
) -> dict[str, tuple[int, float, int, int]]:
    """(trades, pnl, wins, losses) per local day, each trade put on the day its own
    close falls on in ``zone`` (``astimezone``): no midnights computed at all."""
    out: dict[str, list[Any]] = {}
    for _, _, closed, pnl in rows:
        day = _utc(closed).astimezone(zone).date()
        if first <= day <= last:
            t = out.setdefault(day.isoformat(), [0, 0.0, 0, 0])
            t[0] += 1
            t[1] += pnl
            t[2] += pnl > 0
            t[3] += pnl < 0
    return {day: (t[0], t[1], t[2], t[3]) for day, t in out.items()}


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    zone_day=st.sampled_from(ODD_ZONES),
    raw=trades,
    start=st.integers(-4, 3),
    span=st.integers(0, 9),
)
def test_the_calendar_puts_each_trade_on_its_local_day(
    db: Path, zone_day: tuple[str, dt.date], raw: list[Any], start: int, span: int
) -> None:
    """The calendar query (``trade_days`` less pieces) and the straight read of
    ``trades`` (``_daily_local``) both answer what each trade's own local date says,
    in every zone, also for a range of days that never began (Samoa's 2011-12-30)."""
    from contracts.query import run_query

    tz, day = zone_day
    base = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    rows = [(source, account,
             utc_text(base + dt.timedelta(minutes=minute, microseconds=micros)), pnl)
            for source, account, minute, micros, pnl in raw]  # fmt: skip
    _store(db, rows)
    since = day + dt.timedelta(days=start)
    until = since + dt.timedelta(days=span)
    expected = _by_local_day(rows, ZoneInfo(tz), since, until)
    found = run_query(db, "calendar", {"tz": tz, "since": since, "until": until})
    assert {r["date"]: r["trades"] for r in found.rows} == {d: v[0] for d, v in expected.items()}
    for r in found.rows:
        _, pnl, wins, losses = expected[r["date"]]
        assert (r["wins"], r["losses"]) == (wins, losses)
        assert r["pnl"] == pytest.approx(pnl, abs=0.005 + 1e-9)
    con = _read(db)
    try:
        straight = _daily_local(con, Filters(tz=tz), since, until)
    finally:
        con.con.close()
    assert {r[0]: r[1] for r in straight} == {d: v[0] for d, v in expected.items()}


@given(st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30),
                    timezones=st.sampled_from([ZoneInfo(z) for z, _ in ZONES])))  # fmt: skip
def test_utc_text_equals_strftime(moment: dt.datetime) -> None:
    assert utc_text(moment) == reference_utc_text(moment)


# --- the dashboard's parts on one connection ----------------------------------------


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    zone_day=st.sampled_from(ZONES),
    raw=trades,
    scoped=st.booleans(),
)
def test_the_dashboard_on_one_connection_equals_its_parts_apart(
    db: Path, zone_day: tuple[str, dt.date], raw: list[Any], scoped: bool
) -> None:
    """``dashboard_data`` reads every part on one connection that remembers its sums
    (``reads.one_connection``); each part read on its own connection, as the routes
    read them, says the same."""
    from worker.http import reads, seed
    from worker.http.tokens import Principal

    tz, _ = zone_day
    # around now, so that today, this week and the calendar's year hold trades
    base = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = [(source, account,
             utc_text(base + dt.timedelta(minutes=minute * 7, microseconds=micros)), pnl)
            for source, account, minute, micros, pnl in raw]  # fmt: skip
    _store(db, rows)
    p = Principal("t", "t", ("ACC-1",) if scoped else (), (), publish=False, admin=not scoped)
    params = {"tz": tz}
    together = seed.dashboard_data(db, p, params)
    apart = {
        "pnl": reads.run_scoped(db, p, "pnl", params),
        "bots": reads.clean(reads.bots(db, p, params)),
        "open_trades": seed._columns(
            reads.run_scoped(db, p, "active-trades", {}), seed.OPEN_COLUMNS
        ),  # the page's columns
        "history": reads.run_scoped(db, p, "history", {**params, "limit": 50}),
        "calendar": reads.run_scoped(db, p, "calendar", params),
        "daily_loss": reads.run_scoped(db, p, "daily-loss", params),
    }
    all_time = apart["pnl"]["rows"][0]["pnl"] if apart["pnl"]["rows"] else 0.0
    apart["equity"] = reads.clean(seed.equity(db, p, params, all_time))
    assert together == apart


def test_the_dashboard_sees_settled_months_rewritten_as_a_rebuild_rewrites_them(
    db: Path,
) -> None:
    """Serve keeps the sums of months before two days ago across commits, under the
    settled counter a rebuild bumps: months emptied by a rebuild are gone from the bots'
    rows (found by the property above, whose writer once left the counter alone: a
    kept month with no day row behind it stopped the dashboard with a TypeError)."""
    from worker.http import seed
    from worker.http.tokens import Principal

    old = utc_text(dt.datetime.now(dt.UTC) - dt.timedelta(days=40))
    p = Principal("t", "t", ("ACC-1",), (), publish=False, admin=False)
    _store(db, [("bot-a", "ACC-1", old, 12.5)])
    assert [b["source"] for b in seed.dashboard_data(db, p, {"tz": "UTC"})["bots"]] == ["bot-a"]
    _store(db, [])
    assert seed.dashboard_data(db, p, {"tz": "UTC"})["bots"] == []
