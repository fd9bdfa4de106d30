"""Errors a person meets get one line and the documented exit code, never a traceback
(``worker.errors.one_line`` at the CLI's edge; codes in README "When things go wrong")."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import assert_one_clear_line, tradescribe, unit_service

README = Path(__file__).parent.parent / "README.md"


def one_line(out: subprocess.CompletedProcess[str]) -> str:
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


@pytest.fixture
def foreign_db(tmp_path: Path) -> Path:
    """Someone else's SQLite file: a ``trades`` table, not tradescribe's."""
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY, symbol TEXT, pnl REAL)")
    con.commit()
    con.close()
    return path


def test_query_on_a_file_that_is_not_a_database_is_one_line() -> None:
    out = tradescribe("query", "pnl", "--db", str(README))
    assert_one_clear_line(out, 1, "is not a tradescribe database", "file is not a database")
    assert one_line(out).startswith(f"error: {README}")
    dlq = tradescribe("dlq", "list", "--db", str(README))
    assert_one_clear_line(dlq, 1, "file is not a database")
    one_line(dlq)


@pytest.mark.parametrize("name", ["pnl", "history", "active-trades"])
def test_query_on_someone_elses_sqlite_file_says_it_is_not_tradescribes(
    foreign_db: Path, name: str
) -> None:
    out = tradescribe("query", name, "--db", str(foreign_db))
    assert_one_clear_line(out, 1, f"{foreign_db} is not a tradescribe database", "no such column")
    one_line(out)


def test_history_until_the_last_representable_day_is_a_bad_filter(foreign_db: Path) -> None:
    out = tradescribe("query", "history", "--db", str(foreign_db), "--until", "9999-12-31")
    assert_one_clear_line(out, 1, "bad filter for 'history': until", "9998-12-31")
    one_line(out)


def test_worker_refuses_a_db_that_is_a_folder(tmp_path: Path, redis_url: str) -> None:
    out = tradescribe("worker", "--db", str(tmp_path), "--redis-url", redis_url)
    assert_one_clear_line(out, 6, f"--db {tmp_path} is a folder", "tradescribe.db")
    one_line(out)


def test_worker_refuses_a_db_whose_folder_does_not_exist_and_creates_nothing(
    tmp_path: Path, redis_url: str
) -> None:
    db = tmp_path / "typo" / "t.db"
    out = tradescribe("worker", "--db", str(db), "--redis-url", redis_url)
    assert_one_clear_line(out, 6, f"the folder {db.parent} of --db {db} does not exist", "mkdir")
    one_line(out)
    assert not db.parent.exists()


def test_worker_leaves_a_file_that_is_not_its_database_untouched(
    foreign_db: Path, redis_url: str
) -> None:
    before = foreign_db.read_bytes()
    out = tradescribe("worker", "--db", str(foreign_db), "--redis-url", redis_url)
    assert_one_clear_line(out, 6, f"--db {foreign_db} is not a tradescribe database", "trades")
    one_line(out)
    assert foreign_db.read_bytes() == before  # not switched to WAL, no tables added
    not_sqlite = tradescribe("worker", "--db", str(README), "--redis-url", redis_url)
    assert_one_clear_line(not_sqlite, 6, f"--db {README} is not an SQLite database")


def _as_unprivileged() -> list[str]:
    """Root writes any file: run root without the capabilities that let it (setpriv)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: a read-only file is writable here")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]


def _worker(db: Path, redis_url: str) -> subprocess.CompletedProcess[str]:
    return tradescribe("worker", "--db", db, "--redis-url", redis_url, prefix=_as_unprivileged())


def test_worker_on_a_read_only_database_exits_4_naming_the_fix(
    tmp_path: Path, redis_url: str
) -> None:
    db = tmp_path / "t.db"
    sqlite3.connect(db).close()
    db.chmod(0o444)
    out = _worker(db, redis_url)
    assert_one_clear_line(out, 4, f"the database file {db} is read-only", "chmod u+rw")
    one_line(out)
    assert "4" in unit_service()["RestartPreventExitStatus"].split()  # systemd stops retrying


def test_worker_in_a_read_only_folder_exits_4_naming_the_fix(
    tmp_path: Path, redis_url: str
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    db = folder / "t.db"
    sqlite3.connect(db).close()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        out = _worker(db, redis_url)
    finally:
        folder.chmod(0o700)
    assert_one_clear_line(out, 4, f"the folder {folder} is not writable", "chown")
    one_line(out)


@pytest.fixture
def not_redis() -> Iterator[int]:
    """A plain TCP listener that answers like a web server: the port of something else."""
    server = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    done.set()
    with contextlib.suppress(OSError):  # wakes the accept() at once; close() alone does not
        server.shutdown(socket.SHUT_RDWR)
    server.close()
    thread.join(5)


@pytest.mark.parametrize("command", ["status", "ping"])
def test_a_port_that_is_not_redis_exits_3(not_redis: int, command: str) -> None:
    key = {"TRADESCRIBE_CHANNEL_KEY": os.environ["TRADESCRIBE_CHANNEL_KEY"]}  # the suite's
    out = tradescribe(command, "--redis-url", f"redis://127.0.0.1:{not_redis}/0", env=key)
    assert_one_clear_line(out, 3, "is not a working Redis server", "--redis-url")
    one_line(out)
