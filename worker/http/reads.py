"""The reads the server makes, each on a read-only connection, each scoped to a
principal: the named queries of ``contracts.query``, seed 002's four shapes, the
dashboard's bot table and the health strip.

Scope is applied in SQL (``Filters.scope_accounts`` / ``scope_sources``), so a
row of another tenant never leaves the database; it is not filtered afterwards.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contracts.query import (
    QUERIES,
    Filters,
    QueryError,
    QuerySpec,
    connect_readonly,
    parse_filters,
)
from contracts.query_db import SQLITE, ReadConnection
from contracts.query_sql import ACTIVE_TRADE, summarise
from contracts.query_stats import (
    EMPTY,
    MIDNIGHT,
    has_table,
    merge,
    remembered,
    settled,
    tidy,
)
from worker.cli.output import clean as clean  # serve cleans every answer it reads
from worker.http import memo
from worker.http.tokens import Principal

QUERY_NAMES = tuple(QUERIES)


def scoped(principal: Principal, name: str, params: dict[str, Any]) -> tuple[QuerySpec, Filters]:
    """The query and its filters, narrowed to what ``principal`` may see."""
    spec, f = parse_filters(name, params)
    if principal.admin:
        return spec, f
    if f.wait_for:
        # whether another tenant's event exists (or why it was dead-lettered) is theirs
        raise QueryError("wait_for needs an admin token over HTTP; poll the query instead")
    scope = {"scope_accounts": principal.accounts, "scope_sources": principal.sources or None}
    return spec, f.model_copy(update=scope)


_SHARED = threading.local()  # .con: (db, the connection one_connection() opened)


@contextlib.contextmanager
def one_connection(db: Path | str) -> Iterator[ReadConnection]:
    """Every read of ``db`` made in this thread inside the block goes through one
    connection (the dashboard's seven answers opened seven, each starting with a cold
    page cache), which remembers its aggregate reads: the sums of all history that the
    P&L card and the history's summary both need are read once."""
    with connect_readonly(db) as con:
        memo.attach(con, db)  # SQLite: the memo of the file's version, shared
        if con.memo is None:
            con.memo = {}  # PostgreSQL: this answer's own
        _SHARED.con = (db, con)
        try:
            yield con
        finally:
            _SHARED.con = None


@contextlib.contextmanager
def _connected(db: Path | str) -> Iterator[ReadConnection]:
    """The connection of an enclosing :func:`one_connection` on ``db``, else a new one."""
    shared = getattr(_SHARED, "con", None)
    if shared is not None and shared[0] == db:
        yield shared[1]
        return
    with connect_readonly(db) as con:
        memo.attach(con, db)
        yield con


def run_scoped(
    db: Path | str, principal: Principal, name: str, params: dict[str, Any]
) -> dict[str, Any]:
    """One named query as ``tradescribe query NAME --json`` prints it, scoped."""
    from contracts.query import wait_for_event

    spec, f = scoped(principal, name, params)
    if f.wait_for and not wait_for_event(db, f.wait_for, f.wait_timeout_s):
        raise QueryError(f"event {f.wait_for} was not committed within {f.wait_timeout_s:g}s")
    with _connected(db) as con:
        result = spec.run(con, f, dt.datetime.now(dt.UTC)).as_dict()
    return clean(result)  # type: ignore[no-any-return]


def _scope_sql(principal: Principal) -> tuple[str, list[Any]]:
    if principal.admin:
        return "TRUE", []  # both engines (SQLite since 3.23)
    sql = f"account IN ({', '.join('?' * len(principal.accounts))})"
    params: list[Any] = list(principal.accounts)
    if principal.sources:
        sql += f" AND source IN ({', '.join('?' * len(principal.sources))})"
        params += list(principal.sources)
    return sql, params


def bots(db: Path | str, principal: Principal, params: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per bot (source) in scope: trades, win rate, net, profit factor (all
    time, from ``trade_months``: one pass over a table ~1/40 the size of ``trades``;
    ``trade_days``, ~1/10, on a schema without it), open trades (the partial index of
    active trades), open positions, last activity (the latest close on its last
    trading day, or a later update of an open trade)."""
    where, args = _scope_sql(principal)
    with _connected(db) as con:
        closed = remembered(con, ("bots: closed by source", where, tuple(args)),
                            lambda: _closed_by_source(con, where, args))  # fmt: skip
        plus = con.d.noindex
        active = {
            r[0]: r[1:]
            for r in con.execute(
                # GROUP BY +source: grouping by the key's first column would walk the whole
                # primary key (1.2 s at 1,000,000 trades) instead of the partial index (1 ms)
                f"SELECT source, count(*), max(updated_at) FROM trades WHERE {ACTIVE_TRADE}"
                f" AND {_plus(con, where)} GROUP BY {plus}source",
                args,
            )
        }
        positions = dict(con.execute(
            f"SELECT source, count(*) FROM positions WHERE is_active = 1 AND {where}"
            " GROUP BY source", args))  # fmt: skip
        out = []
        for source in sorted(set(closed) | set(active)):
            record = closed.get(source)
            summary = summarise(record[:7]) if record else summarise(EMPTY)
            last = [active[source][1]] if source in active else []
            if record and record[7]:  # no day row in its last month: no close to name
                last.append(_last_close(con, db, where, args, source, record[7]))
            out.append({
                "source": source, "trades": summary["count"], "win_rate": summary["win_rate"],
                "net": summary["net"], "profit_factor": summary["profit_factor"],
                "open_trades": active[source][0] if source in active else 0,
                "open_positions": positions.get(source, 0),
                "last_activity": max((t for t in last if t), default=None),
            })  # fmt: skip
    return out


def _last_close(
    con: ReadConnection, db: Path | str, where: str, args: list[Any], source: str, day: str
) -> str | None:
    """The latest close of ``source`` on UTC ``day`` (its last trading day): a walk of
    that day's closes, every bot's, until the last of ``source`` (5-6 ms per idle bot
    after 40,000 closes of others that day). Where serve keeps reads across commits
    (``con.lasting``), it is kept under the number of ``source``'s events in the log:
    every change to a row of ``source`` comes with one (each projection's key holds
    the event's source)."""
    plus = con.d.noindex
    sql = f"""SELECT max(closed_at) FROM trades WHERE closed_at >= ? AND closed_at < ?
        AND {plus}status = 'closed' AND {plus}source = ? AND {_plus(con, where)}"""
    params = [day + MIDNIGHT, _next_day(day) + MIDNIGHT, source, *args]

    def read() -> str | None:
        found: str | None = con.execute(sql, params).fetchone()[0]
        return found

    if con.lasting is None:
        return remembered(con, (sql, tuple(params)), read)  # type: ignore[no-any-return]
    events = _log(con, db).by_source.get(source, 0)  # before the read: it sees them all
    return con.lasting.get((sql, tuple(params), events), read)  # type: ignore[no-any-return]


def _closed_by_source(
    con: ReadConnection, where: str, args: list[Any]
) -> dict[str, tuple[Any, ...]]:
    """Per source in scope: trades, wins, losses, gross profit and loss, best, worst,
    and its last day in ``trade_days`` (a row kept with ``trades = 0`` included)."""
    d = con.d
    figures = f"{d.isum('trades')}, {d.isum('wins')}, {d.isum('losses')}, " \
        f"{d.total('gross_profit')}, {d.total('gross_loss')}, max(best), min(worst)"  # fmt: skip
    if not has_table(con, "trade_months"):  # before schema 5
        sql = f"SELECT source, {figures}, max(day) FROM trade_days WHERE {where} GROUP BY source"
        return {r[0]: r[1:] for r in con.execute(sql, args)}
    # The months hold the same sums as the days in a quarter of the rows (80 -> 15 ms
    # at 1,000,000 trades). A source's last day lies in its last month (a day's row and
    # its month's row are made, and kept, by the same trades): a range of the days'
    # primary key, read from its end.
    sql = f"SELECT source, {figures}, max(month) FROM trade_months WHERE {where}"
    by = " GROUP BY source"
    cut = settled(con)
    if cut is None:
        records = con.execute(sql + by, args).fetchall()
    else:  # the months before the cut kept across commits, the rest read (one or two)
        old_sql, new_sql = f"{sql} AND month < ?{by}", f"{sql} AND month >= ?{by}"
        old_args = [*args, cut[0][:7]]
        kept = con.lasting.get((old_sql, tuple(old_args), cut[1]),
                               lambda: con.execute(old_sql, old_args).fetchall())  # fmt: skip
        both: dict[str, tuple[Any, ...]] = {}
        for source, *record, month in [*kept, *con.execute(new_sql, [*args, cut[0][:7]])]:
            was = both.get(source)
            sums = tuple(record) if was is None else merge(was[:7], record)
            both[source] = (*sums, month if was is None else max(was[7], month))
        records = [(source, *v[:3], tidy(v[3]), tidy(v[4]), *v[5:]) for source, v in
                   both.items()]  # fmt: skip
    out = {}
    for source, *record, month in records:
        last = con.execute(
            f"""SELECT day FROM trade_days WHERE day >= ? AND day < ? AND source = ?
            AND {where} ORDER BY day DESC LIMIT 1""",
            [f"{month}-01", f"{month}-32", source, *args],
        ).fetchone()
        out[source] = (*record, last[0] if last else None)
    return out


def _next_day(day: str) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()


def _plus(con: ReadConnection, where: str) -> str:
    """The scope written ``+account``/``+source`` on SQLite: the query keeps to its own
    index (PostgreSQL has no such hint: the scope as it is)."""
    if con.d is not SQLITE:
        return where
    return where.replace("account IN", "+account IN").replace("source IN", "+source IN")


@dataclass
class Tally:
    """Events per type and the last commit, in one scope, up to ``seq``."""

    seq: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    last_commit_at: str | None = None


@dataclass
class _Log:
    """Per database: events and the newest commit time per (type, account, source), and
    events per source, up to ``seq``. Each refresh reads only the events committed since
    (a range of the primary key), once for every scope: the health strip of each token
    read that range for itself, and during a drain four times a second per token it was
    most of serve's own time beside the dashboard's sums."""

    seq: int = 0
    groups: dict[tuple[str, str, str], tuple[int, str]] = field(default_factory=dict)
    by_source: dict[str, int] = field(default_factory=dict)
    tallies: dict[tuple[Any, ...], Tally] = field(default_factory=dict)  # per scope, at seq


_LOGS: dict[tuple[Any, ...], _Log] = {}
_LOGS_LOCK = threading.Lock()


def _log(con: ReadConnection, db: Path | str) -> _Log:
    """The log of ``db`` as ``con`` sees it now: the events since the last look added."""
    # a file put in the path's place is another log (PostgreSQL: the URL names it)
    key = (str(db), *_identity(db)) if con.d is SQLITE else (str(db),)
    with _LOGS_LOCK:  # the max read inside: a later look never sees an earlier max
        upto = int(con.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])
        log = _LOGS.get(key) or _Log()
        if upto < log.seq:  # a restored or rewritten database: start over
            log = _Log()
        if upto > log.seq or key not in _LOGS:
            groups, by_source = dict(log.groups), dict(log.by_source)
            for kind, account, source, n, newest in con.execute(
                """SELECT type, account, source, count(*), max(committed_at) FROM events
                WHERE seq > ? AND seq <= ? GROUP BY type, account, source""",
                [log.seq, upto],
            ):
                had = groups.get((kind, account, source))
                groups[kind, account, source] = (
                    (n, newest) if had is None else (had[0] + n, max(had[1], newest))
                )
                by_source[source] = by_source.get(source, 0) + n
            log = _LOGS[key] = _Log(upto, groups, by_source)
        return log


def _identity(db: Path | str) -> tuple[int, int]:
    st = os.stat(db)
    return st.st_dev, st.st_ino


def _tally(con: ReadConnection, db: Path | str, principal: Principal) -> Tally:
    log = _log(con, db)
    scope = ("*",) if principal.admin else (principal.accounts, principal.sources)
    tally = log.tallies.get(scope)
    if tally is None:
        tally = log.tallies[scope] = _scoped(log, principal)
    return tally


def _scoped(log: _Log, principal: Principal) -> Tally:
    """The log's tally in ``principal``'s scope (:func:`_scope_sql` in Python)."""
    accounts, sources = set(principal.accounts), set(principal.sources)
    counts: dict[str, int] = {}
    last: str | None = None
    for (kind, account, source), (n, newest) in log.groups.items():
        if not principal.admin and (account not in accounts or (sources and source not in sources)):
            continue
        counts[kind] = counts.get(kind, 0) + n
        last = newest if last is None else max(last, newest)
    return Tally(log.seq, dict(sorted(counts.items())), last)


def health(db: Path | str, principal: Principal) -> dict[str, Any]:
    """The health strip: last commit and its age, events per type (in scope); for
    an admin also the dead letters and the file itself."""
    with connect_readonly(db) as con:
        tally = _tally(con, db, principal)
        out: dict[str, Any] = {
            "last_commit_at": tally.last_commit_at,
            "last_commit_age_s": _age(tally.last_commit_at) if tally.last_commit_at else None,
            "events": sum(tally.counts.values()),
            "events_by_type": tally.counts,
        }
        if principal.admin:
            out["dead_letters"] = con.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
            out["schema_version"], out["db_bytes"] = _version_and_size(con, db)
    return out


def _version_and_size(con: ReadConnection, db: Path | str) -> tuple[int, int]:
    """The schema version and the database's size in bytes: the file's, or what
    PostgreSQL's ``pg_database_size`` says of the database."""
    if con.d is SQLITE:
        return int(con.execute("PRAGMA user_version").fetchone()[0]), os.path.getsize(db)
    version, size = con.execute(
        "SELECT (SELECT coalesce(max(version), 0) FROM schema_migrations),"
        " pg_database_size(current_database())"
    ).fetchone()
    return int(version), int(size)


def _age(moment: str) -> float:
    at = dt.datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return round((dt.datetime.now(dt.UTC) - at).total_seconds(), 3)


def dead_letters(db: Path | str, limit: int) -> list[dict[str, Any]]:
    """The latest dead letters (admin only), bytes shown as text."""
    with connect_readonly(db) as con:
        cur = con.execute("SELECT * FROM dead_letters ORDER BY id DESC LIMIT ?", (limit,))
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur]
    for row in rows:
        for k, v in row.items():
            if isinstance(v, bytes):
                row[k] = v.decode("utf-8", "replace")
    return rows


def events_since(
    db: Path | str, principal: Principal, after: int, upto: int
) -> list[dict[str, Any]]:
    """Committed events in (after, upto] that ``principal`` may see, for the live stream."""
    where, args = _scope_sql(principal)
    with connect_readonly(db) as con:
        cur = con.execute(
            f"""SELECT seq, event_id, type, source, account, subject, ts, committed_at
            FROM events WHERE seq > ? AND seq <= ? AND {where} ORDER BY seq LIMIT 1000""",
            [after, upto, *args],
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur]


def max_seq(db: Path | str) -> int:
    with connect_readonly(db) as con:
        return int(con.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])


def pipeline(
    redis_url: str | None,
    stream: str,
    group: str,
    heartbeat_ttl_s: float,
    key: bytes | None,
    partitions: int = 1,
) -> dict[str, Any]:
    """The worker's heartbeat (signed: checked with the channel ``key``) and the group's
    pending entries, as ``tradescribe check`` judges them (admin only; with partitions,
    every partition's holder and its own beat, without check's ping); what went wrong
    when Redis or the key is missing."""
    import redis

    from contracts.redisclient import REDIS_ERRORS, sync_client
    from worker.ops.health import check_health
    from worker.ops.partition_health import check_partitions

    if redis_url is None:
        return {"ok": None, "reasons": ["no --redis-url: the pipeline cannot be asked"]}
    if key is None:
        return {"ok": None, "reasons": ["no channel key: the heartbeat cannot be verified"]}
    client: redis.Redis | redis.RedisCluster | None = None
    try:
        client = sync_client(redis_url, socket_timeout=1, socket_connect_timeout=1)
        if partitions > 1:
            return check_partitions(client, stream, group, partitions, key=key, answered=None,
                                    max_beat_age_s=heartbeat_ttl_s, max_pending_age_s=300,
                                    error_window_s=60).as_dict()  # fmt: skip
        return check_health(client, stream, group, key=key, max_beat_age_s=heartbeat_ttl_s,
                            max_pending_age_s=300, error_window_s=60).as_dict()  # fmt: skip
    except REDIS_ERRORS as exc:
        return {"ok": False, "reasons": [f"cannot reach Redis: {exc}"]}
    finally:
        if client is not None:
            client.close()
