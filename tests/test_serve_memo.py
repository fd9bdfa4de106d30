"""serve's reads of sums are made once per version of the SQLite file
(``worker/http/memo.py``): every answer after a commit, or after another file is put in
the path's place, is the answer the query layer gives without any memo."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from pathlib import Path
from typing import Any

from bench.ceiling import create_schema
from contracts.query import connect_readonly
from contracts.query_model import utc_text
from worker.http import reads, seed
from worker.http.tokens import Principal
from worker.store import aggregates

ADMIN = Principal("a", "admin", (), (), publish=False, admin=True)
TENANT = Principal("t", "tenant", ("ACC-1",), (), publish=False, admin=False)
QUERIES = [("pnl", {"tz": "Europe/Berlin"}), ("calendar", {"tz": "Europe/Berlin"}),
           ("calendar", {"tz": "Asia/Kathmandu"}), ("calendar", {}),
           ("history", {"limit": 5}), ("plugins", {})]  # fmt: skip


def make_db(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    create_schema(con)
    con.close()


def add_trades(path: Path, first: int, pnls: list[float]) -> None:
    """Closed trades, one every 5 hours back from now, committed as one transaction
    (the sums rebuilt, as the worker keeps them)."""
    now = dt.datetime.now(dt.UTC)
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("BEGIN")
        for n, pnl in enumerate(pnls, first):
            closed = utc_text(now - dt.timedelta(hours=5 * n))
            con.execute(
                """INSERT INTO trades (source, trade_id, account, plugin_id, mode, strategy,
                status, closed_at, realized_pnl, created_at, updated_at)
                VALUES (?, ?, ?, 'p', 'paper', 's', 'closed', ?, ?, ?, ?)""",
                (f"bot-{n % 2}", f"T{n}", f"ACC-{n % 2 + 1}", closed, pnl, closed, closed),
            )
        for sql in aggregates.RESUM:
            con.execute(sql)
        con.execute("COMMIT")
    finally:
        con.close()


def answers(db: Path) -> dict[str, Any]:
    """What serve answers (through the memo), per principal and query, and bots."""
    out: dict[str, Any] = {}
    for p in (ADMIN, TENANT):
        for name, params in QUERIES:
            out[f"{p.name} {name} {params}"] = reads.run_scoped(db, p, name, params)
        out[f"{p.name} bots"] = reads.clean(reads.bots(db, p, {}))
        out[f"{p.name} dashboard"] = seed.dashboard_data(db, p, {"tz": "Europe/Berlin"})
    return out


def without_memo(db: Path) -> dict[str, Any]:
    """The same queries, scoped as serve scopes them, on a connection of their own
    with no memo (``contracts.query.connect_readonly``)."""
    out = {}
    for p in (ADMIN, TENANT):
        for name, params in QUERIES:
            spec, f = reads.scoped(p, name, params)
            with connect_readonly(db) as con:
                assert con.memo is None
                result = spec.run(con, f, dt.datetime.now(dt.UTC)).as_dict()
            out[f"{p.name} {name} {params}"] = reads.clean(result)
    return out


def test_every_answer_after_a_commit_holds_it(tmp_path: Path) -> None:
    db = tmp_path / "memo.db"
    make_db(db)
    add_trades(db, 0, [10.0, -4.5, 7.25, 3.0])
    before = answers(db)
    assert answers(db) == before  # the same version: the same answers, from the memo
    add_trades(db, 4, [100.0, -30.0])
    after = answers(db)
    reference = without_memo(db)
    for key, value in reference.items():
        assert after[key] == value, key
    assert after["admin pnl {'tz': 'Europe/Berlin'}"] != before["admin pnl {'tz': 'Europe/Berlin'}"]
    assert after["admin bots"] != before["admin bots"]
    assert after["tenant dashboard"] != before["tenant dashboard"]


def test_another_file_put_in_the_paths_place_is_read_afresh(tmp_path: Path) -> None:
    db, other = tmp_path / "memo.db", tmp_path / "other.db"
    for path in (db, other):
        make_db(path)
    add_trades(db, 0, [1.0, 2.0])
    add_trades(other, 0, [50.0, -20.0, 5.0])
    answers(db)
    os.replace(other, db)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    assert {k: v for k, v in answers(db).items() if k in without_memo(db)} == without_memo(db)
