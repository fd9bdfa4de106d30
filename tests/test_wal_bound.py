"""The WAL stays bounded: truncated to a size limit once checkpoints can start it over,
and a reader that starves checkpoints costs the writer a wait per growth step, not per commit."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from worker.store.sql import WAL_LIMIT_BYTES, WalBound, writer_pragmas

MIB = 2**20


def _writer(db: Path) -> sqlite3.Connection:
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    for pragma in writer_pragmas("FULL", 5000):
        con.execute(pragma)
    con.execute("CREATE TABLE IF NOT EXISTS t (b BLOB)")
    return con


def test_wal_grown_behind_a_reader_is_truncated_to_the_limit_after_it_leaves(
    tmp_path: Path,
) -> None:
    db = tmp_path / "w.db"
    con = _writer(db)
    wal = f"{db}-wal"
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()  # holds its snapshot: no restart
    bound = WalBound(wal, restart_bytes=20 * MIB, wait_ms=20)
    blob = os.urandom(MIB)
    for _ in range(48):
        con.execute("INSERT INTO t VALUES (?)", (blob,))
        bound.after_commit(con)
    grown = os.stat(wal).st_size
    assert grown > 40 * MIB
    # it tried at 20 MiB and again 20 MiB later, not after each of the 28 commits past 20
    assert bound.restarts == 2
    reader.execute("COMMIT")
    reader.close()
    for _ in range(2):
        con.execute("INSERT INTO t VALUES (?)", (b"x",))
        bound.after_commit(con)
    # the reader gone, the automatic checkpoint completed, the next commit started the
    # WAL over and journal_size_limit truncated it
    assert os.stat(wal).st_size <= WAL_LIMIT_BYTES
    assert bound.restarts == 2
    assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 50
    con.close()


def test_wal_without_readers_never_passes_the_limit(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    con = _writer(db)
    wal = f"{db}-wal"
    bound = WalBound(wal)
    blob = os.urandom(MIB // 2)
    peak = 0
    for _ in range(80):  # 40 MiB written, one commit per half MiB
        con.execute("INSERT INTO t VALUES (?)", (blob,))
        bound.after_commit(con)
        peak = max(peak, os.stat(wal).st_size)
    assert peak <= WAL_LIMIT_BYTES
    assert bound.restarts == 0  # the automatic checkpoints were enough
    con.close()
