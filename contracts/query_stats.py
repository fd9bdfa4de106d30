"""Sums over closed trades, fast at any size.

A UTC time range ``[lo, hi)`` is split into whole UTC months, read from
``trade_months`` (schema 5: per month, tenant, symbol and side), whole UTC days,
read from ``trade_days`` (schema 3: per day and tenant), and the ragged edges
(less than a day each, e.g. when a local day starts at 23:00 UTC), read from
``trades``; both tables are kept by the worker. With a symbol or side filter the
days are not used (``trade_days`` has neither): the partial months are read from
``trades``. Another status than closed reads ``trades`` alone, as do databases
older than the tables.

Where a connection keeps reads across commits (``con.lasting``: serve on SQLite), the
sums of whole months before :func:`settled_cut` (the month of the day before
yesterday) are kept under the ``meta`` row the worker bumps in any commit that changes
a day before yesterday (a late close, an import of history, a rebuild): after a commit
of today's trades only the current month is read again (:func:`settled`).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from contracts.query_db import Dialect, ReadConnection
from contracts.query_model import Filters
from contracts.vocabulary import ROW_TENANCY, SETTLED_CHANGED


def raw_summary(d: Dialect) -> str:
    return f"""count(*), {d.count_if("realized_pnl > 0")}, {d.count_if("realized_pnl < 0")},
    {d.total("CASE WHEN realized_pnl > 0 THEN realized_pnl END")},
    {d.total("CASE WHEN realized_pnl < 0 THEN realized_pnl END")}, max(realized_pnl),
    min(realized_pnl)"""


def day_summary(d: Dialect) -> str:
    return f"""{d.isum("trades")}, {d.isum("wins")}, {d.isum("losses")},
    {d.total("gross_profit")}, {d.total("gross_loss")}, max(best), min(worst)"""


EMPTY: tuple[Any, ...] = (0, 0, 0, 0.0, 0.0, None, None)
MIDNIGHT = "T00:00:00.000000Z"


def has_table(con: ReadConnection, name: str) -> bool:
    known = con.tables.get(name)
    if known is None:
        known = con.tables[name] = con.execute(con.d.has_table, (name,)).fetchone() is not None
    return known


def has_trade_days(con: ReadConnection) -> bool:
    return has_table(con, "trade_days")


def can_use_days(con: ReadConnection, f: Filters) -> bool:
    return not f.symbol and not f.side and f.status in (None, "closed") and has_trade_days(con)


def can_use_months(con: ReadConnection, f: Filters) -> bool:
    """``trade_months`` (schema 5) also answers a symbol or side filter."""
    return f.status in (None, "closed") and has_table(con, "trade_months")


# A float sum is rounded to this many decimals as it leaves the database: SQLite and
# PostgreSQL add rows in their own order, and the last bits of a float sum depend on it
# (-532.12499999999 or -532.12500000001, shown as -532.12 or -532.13). Money has fewer
# decimals than this; the sum's error is far below it.
SUM_DIGITS = 9


def tidy(value: float | None) -> float:
    """A float sum from SQL, independent of the order the engine added its rows in."""
    return round(value, SUM_DIGITS) + 0.0 if value else 0.0


def merge(a: Sequence[Any], b: Sequence[Any]) -> tuple[Any, ...]:
    """Two (count, wins, losses, gross profit, gross loss, best, worst) summed."""
    best = [x for x in (a[5], b[5]) if x is not None]
    worst = [x for x in (a[6], b[6]) if x is not None]
    return (
        (a[0] or 0) + (b[0] or 0),
        (a[1] or 0) + (b[1] or 0),
        (a[2] or 0) + (b[2] or 0),
        (a[3] or 0.0) + (b[3] or 0.0),
        (a[4] or 0.0) + (b[4] or 0.0),
        max(best) if best else None,
        min(worst) if worst else None,
    )


def _next_day(day: str) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()


Periods = tuple[str | None, str | None, list[tuple[str, str]]]


def _split(
    lo: str | None, hi: str | None, width: int, start: str, step: Callable[[str], str]
) -> Periods:
    """Whole periods [first, end) inside [lo, hi) (named by ``width`` characters, each
    beginning at name + ``start``; ``step`` names the next one), and the edges outside."""
    first = None if lo is None else lo[:width] if lo[width:] == start else step(lo[:width])
    end = None if hi is None else hi[:width]
    if first is not None and end is not None and first >= end:
        return None, None, [(lo or "", hi or "")]  # no whole period inside: all from trades
    edges = []
    if lo is not None and first is not None and lo < first + start:
        edges.append((lo, first + start))
    if hi is not None and end is not None and end + start < hi:
        edges.append((end + start, hi))
    return first, end, edges


def split(lo: str | None, hi: str | None) -> Periods:
    """Whole UTC days [first_day, end_day) inside [lo, hi), and the edges outside them."""
    return _split(lo, hi, 10, MIDNIGHT, _next_day)


MONTH_START = "-01" + MIDNIGHT


def _next_month(month: str) -> str:
    year, number = int(month[:4]), int(month[5:7])
    return f"{year + number // 12:04d}-{number % 12 + 1:02d}"


def split_months(lo: str | None, hi: str | None) -> Periods:
    """Whole UTC months [first, end) inside [lo, hi) ('YYYY-MM'), and the edges outside."""
    return _split(lo, hi, 7, MONTH_START, _next_month)


def _filters(f: Filters, prefix: str = "") -> tuple[list[str], list[Any]]:
    parts: list[str] = []
    params: list[Any] = []
    for column in ROW_TENANCY:
        value = getattr(f, column)
        if value is not None:
            parts.append(f"{prefix}{column} = ?")
            params.append(value)
    for column, scope in (("account", f.scope_accounts), ("source", f.scope_sources)):
        if scope is not None:
            parts.append(f"{prefix}{column} IN ({', '.join('?' * len(scope))})")
            params.extend(scope)
    if f.strategy is not None:
        parts.append(f"{prefix}strategy = ?")
        params.append(f.strategy)
    return parts, params


# A substring matching more symbols than this is tested row by row instead.
MAX_SYMBOLS = 500


MAX_DISTINCT = 5000


def distinct_trades(con: ReadConnection, column: str) -> list[str] | None:
    """The distinct non-null values of ``column`` (the first column of an index on
    trades), one index seek each: a loose index scan. SELECT DISTINCT would read the
    whole index (SQLite skips ahead only with ANALYZE statistics, which the worker
    does not keep). None if there are more than ``MAX_DISTINCT``."""
    sql = f"""WITH RECURSIVE v(x) AS (
        SELECT (SELECT min({column}) FROM trades)
        UNION ALL SELECT (SELECT min({column}) FROM trades WHERE {column} > v.x)
        FROM v WHERE v.x IS NOT NULL)
        SELECT x FROM v WHERE x IS NOT NULL LIMIT ?"""
    found = [row[0] for row in con.execute(sql, (MAX_DISTINCT + 1,))]
    return None if len(found) > MAX_DISTINCT else found


def matching_symbols(con: ReadConnection, text: str) -> list[str] | None:
    """The distinct stored symbols containing ``text`` (case-insensitive, the same
    test as ``Dialect.contains``), from the prefix of the symbol index; None when there
    are too many symbols to list."""
    symbols = distinct_trades(con, "symbol")
    if symbols is None:
        return None
    found = [
        row[0]
        for row in con.execute(
            f"SELECT symbol FROM {con.d.json_texts('symbol')} WHERE {con.d.contains('symbol')}",
            (json.dumps(symbols), text),
        )
    ]
    return None if len(found) > MAX_SYMBOLS else found


@dataclass(frozen=True)
class Symbols:
    """A symbol filter resolved once for a query: the stored symbols its substring
    matches (``matched`` None: too many to list, so it is tested row by row)."""

    text: str
    matched: list[str] | None
    d: Dialect

    def where(self, prefix: str = "") -> tuple[str, list[Any]]:
        """``symbol IN (...)`` (an index can serve that, a substring test cannot);
        ``prefix`` "+" keeps SQLite from choosing the symbol index for it."""
        if self.matched is None:
            return self.d.contains("symbol"), [self.text]
        if not self.matched:
            return "0", []
        return f"{prefix}symbol IN ({', '.join('?' * len(self.matched))})", list(self.matched)


def resolve_symbols(con: ReadConnection, f: Filters) -> Symbols | None:
    """The query's symbol filter, resolved (one loose scan of the symbol index)."""
    return Symbols(f.symbol, matching_symbols(con, f.symbol), con.d) if f.symbol else None


def raw_where(
    d: Dialect,
    f: Filters,
    lo: str | None,
    hi: str | None,
    symbols: Symbols | None = None,
    symbol_prefix: str = "",
) -> tuple[str, list[Any]]:
    """WHERE over ``trades`` for closed trades in [lo, hi) matching every filter;
    ``symbols`` is the symbol filter resolved by :func:`resolve_symbols` (else the
    substring is tested per row), written with ``symbol_prefix`` (see Symbols.where)."""
    parts: list[str] = ["status = ?"]
    params: list[Any] = [f.status or "closed"]
    parts.append("closed_at >= ?" if lo is not None else "closed_at IS NOT NULL")
    params += [lo] if lo is not None else []
    if hi is not None:
        parts.append("closed_at < ?")
        params.append(hi)
    # "+" keeps SQLite off the primary key (source, trade_id) for a source filter:
    # without statistics it would prefer that equality to the closed_at index and then
    # visit and sort every trade of the bot.
    more, more_params = _filters(f, d.noindex)
    parts += more
    params += more_params
    if f.side:
        parts.append(f"{d.noindex}side = ?")
        params.append(f.side)
    if symbols is not None:
        symbol_sql, symbol_params = symbols.where(symbol_prefix and d.noindex)
        parts.append(symbol_sql)
        params += symbol_params
    elif f.symbol:
        parts.append(d.contains("symbol"))
        params.append(f.symbol)
    return " WHERE " + " AND ".join(parts), params


def _summed_where(
    f: Filters, symbols: Symbols | None, period: str, first: str | None, end: str | None
) -> tuple[str, list[Any]]:
    """The WHERE of a read of ``trade_days`` or ``trade_months`` over [first, end)."""
    parts, params = _filters(f)
    if f.side:
        parts.append("side = ?")
        params.append(f.side)
    if symbols is not None:
        symbol_sql, symbol_params = symbols.where()
        parts.append(symbol_sql)
        params += symbol_params
    if first is not None:
        parts.append(f"{period} >= ?")
        params.append(first)
    if end is not None:
        parts.append(f"{period} < ?")
        params.append(end)
    return (" WHERE " + " AND ".join(parts) if parts else ""), params


# The most entries a memo keeps; past it, reads are made and not kept.
MEMO_ENTRIES = 4096
_MISSING = object()


def remembered(con: ReadConnection, key: tuple[Any, ...], read: Callable[[], Any]) -> Any:
    """``read()``, made once per ``key`` while ``con.memo`` is set: the same sums asked
    twice in one answer (the dashboard's P&L and history), or by any answer while the
    database stays at one version (serve: worker/http/memo.py). What is kept is never
    changed by its readers."""
    memo = con.memo
    if memo is None:
        return read()
    found = memo.get(key, _MISSING)
    if found is _MISSING:
        found = read()
        if len(memo) < MEMO_ENTRIES:
            memo[key] = found
    return found


def _remembered(con: ReadConnection, sql: str, params: list[Any]) -> list[Any]:
    """The records of a read of sums, through :func:`remembered`."""
    found: list[Any] = remembered(
        con, (sql, tuple(params)), lambda: con.execute(sql, params).fetchall()
    )
    return found


def settled_cut(today: dt.date) -> str:
    """The first instant (UTC) of the month that holds the day before yesterday: the sums
    of whole months before it change only with a bump of :data:`SETTLED_CHANGED` (the
    worker's cut, yesterday, leaves a day's margin)."""
    return f"{today - dt.timedelta(days=2):%Y-%m}{MONTH_START}"


def settled(con: ReadConnection) -> tuple[str, tuple[Any]] | None:
    """(the cut, what to key reads before it with) when ``con`` keeps reads across
    commits; None when it does not."""
    if con.lasting is None:
        return None

    def read() -> tuple[Any]:
        row = con.execute("SELECT value FROM meta WHERE key = ?", [SETTLED_CHANGED]).fetchone()
        return (row[0] if row else None,)

    changed: tuple[Any] = remembered(con, ("settled sums changed",), read)
    return settled_cut(dt.datetime.now(dt.UTC).date()), changed


def _kept(
    con: ReadConnection, sql: str, params: list[Any], changed: tuple[Any] | None
) -> list[Any]:
    """The records of a read of sums; with ``changed`` (the range lies before the cut),
    kept across commits under it."""
    if changed is None:
        return _remembered(con, sql, params)
    found: list[Any] = con.lasting.get(
        (sql, tuple(params), changed), lambda: _remembered(con, sql, params)
    )
    return found


def stats(
    con: ReadConnection,
    f: Filters,
    lo: str | None,
    hi: str | None,
    group: str | None = None,
    symbols: Symbols | None = None,
) -> dict[Any, tuple[Any, ...]]:
    """Summary tuples of closed trades in [lo, hi), per ``group`` column value (or None);
    ``symbols``: the symbol filter if the caller resolved it already. Where reads are
    kept across commits (:func:`settled`), the part before the cut is read as its own
    range, its reads kept."""
    if symbols is None:
        symbols = resolve_symbols(con, f)  # once, for every part below
    cut = settled(con) if can_use_months(con, f) else None
    if cut is None or (lo is not None and lo >= cut[0]):
        out = _stats(con, f, lo, hi, group, symbols, None)
    elif hi is not None and hi <= cut[0]:
        out = _stats(con, f, lo, hi, group, symbols, cut[1])
    else:
        out = _stats(con, f, lo, cut[0], group, symbols, cut[1])
        for key, sums in _stats(con, f, cut[0], hi, group, symbols, None).items():
            out[key] = merge(out.get(key, EMPTY), sums)
    # one rounding of the float sums, however many parts they were added from
    return {k: (*v[:3], tidy(v[3]), tidy(v[4]), *v[5:]) for k, v in out.items()}


def _stats(
    con: ReadConnection,
    f: Filters,
    lo: str | None,
    hi: str | None,
    group: str | None,
    symbols: Symbols | None,
    changed: tuple[Any] | None,
) -> dict[Any, tuple[Any, ...]]:
    # No GROUP BY without a group (SQLite would sort for nothing); trade_days is grouped
    # by the plain column, which its indexes hold in order.
    raw_key, days_key = (f"coalesce({group}, '')", group) if group else ("NULL", "NULL")
    raw_by = " GROUP BY 1" if group else ""
    days_by = f" GROUP BY {group}" if group else ""
    out: dict[Any, tuple[Any, ...]] = {}

    def add(sql: str, params: list[Any]) -> None:
        for record in _kept(con, sql, params, changed):
            key = (record[0] or "(none)") if group else None
            sums = (*record[1:4], tidy(record[4]), tidy(record[5]), *record[6:])
            out[key] = merge(out.get(key, EMPTY), sums)

    def summed(table: str, period: str, first: str | None, end: str | None) -> None:
        where, params = _summed_where(f, symbols, period, first, end)
        add(f"SELECT {days_key}, {day_summary(con.d)} FROM {table}{where}{days_by}", params)

    def from_trades(edge_lo: str | None, edge_hi: str | None) -> None:
        where, params = raw_where(con.d, f, edge_lo, edge_hi, symbols, "+")
        add(f"SELECT {raw_key}, {raw_summary(con.d)} FROM trades{where}{raw_by}", params)

    # Whole UTC months from trade_months (the fewest rows), the whole days left from
    # trade_days (when the filters allow), the ragged edges (under a day) from trades.
    rest: list[tuple[str | None, str | None]] = [(lo, hi)]
    if can_use_months(con, f):
        first, end, edges = split_months(lo, hi)
        if first is not None or end is not None or not edges:
            summed("trade_months", "month", first, end)
            rest = list(edges)
    for part_lo, part_hi in rest:
        if not can_use_days(con, f):
            from_trades(part_lo, part_hi)
            continue
        first, end, edges = split(part_lo, part_hi)
        if first is not None or end is not None or not edges:
            summed("trade_days", "day", first, end)
        for edge_lo, edge_hi in edges:
            from_trades(edge_lo, edge_hi)
    return out


def daily_utc(con: ReadConnection, f: Filters, first: str, last: str) -> list[tuple[Any, ...]]:
    """(day, trades, pnl, wins, losses) per UTC day from ``trade_days`` (the days before
    the cut kept across commits where reads are: :func:`settled`)."""
    cut = settled(con)
    if cut is None or first >= cut[0][:10]:
        return _daily_utc(con, f, first, last, None)
    before = (dt.date.fromisoformat(cut[0][:10]) - dt.timedelta(days=1)).isoformat()
    if last <= before:
        return _daily_utc(con, f, first, last, cut[1])
    return [*_daily_utc(con, f, first, before, cut[1]),
            *_daily_utc(con, f, cut[0][:10], last, None)]  # fmt: skip


def _daily_utc(
    con: ReadConnection, f: Filters, first: str, last: str, changed: tuple[Any] | None
) -> list[tuple[Any, ...]]:
    parts, params = _filters(f)
    parts += ["day >= ?", "day <= ?"]
    params += [first, last]
    d = con.d
    sql = f"""SELECT day, {d.isum("trades")}, {d.total("gross_profit")} + {d.total("gross_loss")},
        {d.isum("wins")}, {d.isum("losses")} FROM trade_days WHERE {" AND ".join(parts)}
        GROUP BY day ORDER BY day"""
    return [(r[0], r[1], tidy(r[2]), r[3], r[4]) for r in _kept(con, sql, params, changed)]


def counts_since(
    con: ReadConnection, f: Filters, starts: Sequence[str | None]
) -> list[tuple[int, float]]:
    """(closed trades, net P&L) from each start (UTC text, None: all time), in one pass."""
    d = con.d
    if not can_use_days(con, f):
        cols, params = [], []
        for lo in starts:
            cols += [d.count_if("closed_at >= ?"),
                     d.total("CASE WHEN closed_at >= ? THEN realized_pnl END")]  # fmt: skip
            params += [lo or "", lo or ""]
        where, where_params = raw_where(d, f, None, None)
        record = con.execute(f"SELECT {', '.join(cols)} FROM trades{where}",
                             [*params, *where_params]).fetchone()  # fmt: skip
        return [(record[2 * i] or 0, tidy(record[2 * i + 1])) for i in range(len(starts))]
    if can_use_months(con, f):
        # each period summed like a history summary: months, days, edges (a few
        # thousand aggregate rows for all of history; the short periods read days)
        out = []
        symbols = resolve_symbols(con, f)
        for lo in starts:
            record = stats(con, f, lo, None, symbols=symbols).get(None, EMPTY)
            out.append((record[0] or 0, (record[3] or 0.0) + (record[4] or 0.0)))
        return out
    cols, params, edges = [], [], []
    for lo in starts:
        first, _, edge = split(lo, None)
        cols += [d.isum("CASE WHEN day >= ? THEN trades END"),
                 d.total("CASE WHEN day >= ? THEN gross_profit + gross_loss END")]  # fmt: skip
        params += [first or "", first or ""]
        edges.append(edge)
    parts, where_params = _filters(f)
    where = " WHERE " + " AND ".join(parts) if parts else ""
    record = con.execute(f"SELECT {', '.join(cols)} FROM trade_days{where}",
                         [*params, *where_params]).fetchone()  # fmt: skip
    out = []
    for i, edge in enumerate(edges):
        n, net = record[2 * i] or 0, tidy(record[2 * i + 1])
        for edge_lo, edge_hi in edge:
            sql, edge_params = raw_where(d, f, edge_lo, edge_hi)
            more = con.execute(f"SELECT count(*), {d.total('realized_pnl')} FROM trades{sql}",
                               edge_params).fetchone()  # fmt: skip
            n, net = n + more[0], net + tidy(more[1])
        out.append((n, net))
    return out


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _pieces_from_trades(
    con: ReadConnection, f: Filters, ranges: list[tuple[str, str]]
) -> list[tuple[int, float, int, int]]:
    """(trades, pnl, wins, losses) of closed trades in each UTC range, in one statement
    (each range is a search of the closed_at index)."""
    if not ranges:
        return []
    d = con.d
    parts, params = _filters(f, f"{d.noindex}t.")
    where = "".join(f" AND {p}" for p in parts)
    ranges_sql, key = d.json_rows("r")
    sql = f"""SELECT {key}, count(*), {d.total("t.realized_pnl")},
        {d.count_if("t.realized_pnl > 0")}, {d.count_if("t.realized_pnl < 0")}
        FROM {ranges_sql} JOIN trades t
        ON t.closed_at >= r.value ->> 0 AND t.closed_at < r.value ->> 1
        WHERE t.status = 'closed'{where} GROUP BY 1"""
    out = [(0, 0.0, 0, 0)] * len(ranges)
    for key, n, pnl, wins, losses in con.execute(sql, [json.dumps(ranges), *params]):
        out[key] = (n, tidy(pnl), wins or 0, losses or 0)
    return out


def _micros(text: str) -> int:
    """Microseconds since its UTC midnight of a UTC text (``utc_text``'s fixed layout)."""
    return (int(text[11:13]) * 3600 + int(text[14:16]) * 60 + int(text[17:19])) * 1_000_000 \
        + int(text[20:26])  # fmt: skip


_DAY_MICROS = 86_400_000_000


def _longest(day: str, pieces: list[tuple[str, str, int]]) -> tuple[str, str, int]:
    """The first of the longest pieces of UTC ``day`` (as ``max`` picks it)."""
    largest, longest = pieces[0], -1
    if len(pieces) > 1:
        for p in pieces:
            length = (_DAY_MICROS if p[1][:10] != day else _micros(p[1])) - _micros(p[0])
            if length > longest:
                largest, longest = p, length
    return largest


def daily_local(
    con: ReadConnection, f: Filters, bounds: Sequence[str]
) -> list[tuple[int, int, float, int, int]]:
    """(local day index, trades, pnl, wins, losses) per local day (see
    :func:`_local_days`), made once per filters and days while ``con.memo`` is set."""
    parts, params = _filters(f)
    key = ("daily_local", tuple(parts), tuple(params), tuple(bounds))
    found: list[tuple[int, int, float, int, int]] = remembered(
        con, key, lambda: _settled_local_days(con, f, bounds, key)
    )
    return found


def _settled_local_days(
    con: ReadConnection, f: Filters, bounds: Sequence[str], key: tuple[Any, ...]
) -> list[tuple[int, int, float, int, int]]:
    """:func:`_local_days`, the local days through the last bound before the cut (their
    reads lie in UTC days before it) kept across commits where reads are (:func:`settled`)."""
    cut = settled(con)
    k = -1 if cut is None else sum(1 for b in bounds if b < cut[0]) - 1
    if cut is None or k < 1 or any(a > b for a, b in itertools.pairwise(bounds)):
        return _local_days(con, f, bounds)
    old: list[tuple[int, int, float, int, int]] = con.lasting.get(
        (*key[:3], tuple(bounds[: k + 1]), cut[1]), lambda: _local_days(con, f, bounds[: k + 1])
    )
    if k == len(bounds) - 1:
        return old
    return [*old, *((i + k, n, pnl, w, lo) for i, n, pnl, w, lo in _local_days(con, f, bounds[k:]))]


def _local_days(
    con: ReadConnection, f: Filters, bounds: Sequence[str]
) -> list[tuple[int, int, float, int, int]]:
    """(local day index, trades, pnl, wins, losses) per local day, from ``trade_days``.

    ``bounds`` are the local midnights as UTC text: day i is [bounds[i], bounds[i+1]).
    Each UTC day they touch is cut at the local midnights inside it. Its largest piece
    is its ``trade_days`` row minus the other pieces; those are read from ``trades``
    (each is shorter than a day; with one midnight inside, half a day at most).

    A piece's length is read off its UTC text (``_micros``): parsing both ends of ~730
    pieces as datetimes was a third of a year's calendar.
    """
    lo, hi = bounds[0], bounds[-1]
    if lo >= hi:  # days that never began (Samoa skipped 2011-12-30): no time, no trades
        return [(i, 0, 0.0, 0, 0) for i in range(len(bounds) - 1)]
    first = dt.date.fromisoformat(lo[:10]).toordinal()
    last = dt.date.fromisoformat(hi[:10]).toordinal()
    days = [dt.date.fromordinal(o).isoformat() for o in range(first, last + 2)]
    midnights = {d + MIDNIGHT for d in days[:-1]}
    cuts = sorted(set(bounds) | {m for m in midnights if lo < m < hi})
    local = {b: i for i, b in enumerate(bounds)}
    Piece = tuple[str, str, int]  # [start, end) and its local day (-1: outside [lo, hi))
    by_day: dict[str, list[Piece]] = {}
    index = 0
    for start, end in itertools.pairwise(cuts):
        index = local.get(start, index)
        by_day.setdefault(start[:10], []).append((start, end, index))
    next_day = dict(itertools.pairwise(days))
    derived: list[Piece] = []
    read: list[Piece] = []
    for day, pieces in by_day.items():
        largest = _longest(day, pieces)
        derived.append(largest)
        read += [p for p in pieces if p is not largest]
        day_lo, day_hi = day + MIDNIGHT, next_day[day] + MIDNIGHT
        if pieces[0][0] > day_lo:  # before lo, or after hi: outside the range
            read.append((day_lo, pieces[0][0], -1))
        if pieces[-1][1] < day_hi:
            read.append((pieces[-1][1], day_hi, -1))
    whole = {r[0]: r[1:] for r in daily_utc(con, f, min(by_day), max(by_day))}
    sums = [[0, 0.0, 0, 0] for _ in bounds[:-1]]
    taken: dict[str, list[float]] = {}
    got = _pieces_from_trades(con, f, [(a, b) for a, b, _ in read])
    for (start, _, i), values in zip(read, got, strict=True):
        t = taken.setdefault(start[:10], [0, 0.0, 0, 0])
        for k in range(4):
            t[k] += values[k]
            if i >= 0:
                sums[i][k] += values[k]
    nothing = (0, 0.0, 0, 0)
    for start, _, i in derived:
        day_sums = whole.get(start[:10], nothing)
        t = taken.get(start[:10], nothing)  # type: ignore[arg-type]
        for k in range(4):
            sums[i][k] += (day_sums[k] or 0) - t[k]
    return [(i, int(v[0]), float(v[1]), int(v[2]), int(v[3])) for i, v in enumerate(sums)]


def _days_between(first: str, last: str) -> list[str]:
    """UTC days first..last inclusive (ISO dates)."""
    out = []
    day = dt.date.fromisoformat(first)
    end = dt.date.fromisoformat(last)
    while day <= end:
        out.append(day.isoformat())
        day += dt.timedelta(days=1)
    return out


def skip_days(
    con: ReadConnection, f: Filters, lo: str | None, hi: str | None, offset: int
) -> tuple[str | None, int]:
    """A new upper bound and offset naming the same page of closed trades newest first
    (``offset`` into [lo, hi)): the whole UTC days the offset passes over are counted
    from ``trade_days`` instead of walked. Unchanged where ``trade_days`` cannot count
    for these filters. A closed_at lies in one day, so no tie straddles the new bound.
    """
    if not can_use_days(con, f):
        return hi, offset
    first, end, edges = split(lo, hi)
    if first is None and end is None and edges:
        return hi, offset  # less than a day
    passed = 0
    if hi is not None and end is not None and end + MIDNIGHT < hi:
        where, params = raw_where(con.d, f, end + MIDNIGHT, hi)
        passed = con.execute(f"SELECT count(*) FROM trades{where}", params).fetchone()[0]
        if passed > offset:
            return hi, offset
    parts, params = _filters(f)
    if first is not None:
        parts.append("day >= ?")
        params.append(first)
    if end is not None:
        parts.append("day < ?")
        params.append(end)
    where = " WHERE " + " AND ".join(parts) if parts else ""
    sql = f"""SELECT day, {con.d.isum("trades")} FROM trade_days{where} GROUP BY day
        ORDER BY day DESC"""
    bound = hi
    for day, count in con.execute(sql, params):
        if passed + count > offset:
            break
        passed += count
        bound = day + MIDNIGHT
    return bound, offset - passed
