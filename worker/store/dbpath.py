"""Before the worker opens its database: is ``--db`` a file this user can write?

Checked once at start, so a wrong path or a file owned by another user is one line
with the fix and an exit code systemd does not restart on (``worker.errors``), not a
traceback every ``RestartSec``. The worker never creates the database's folder: a
missing folder is a typo or a missing mount far more often than a wish.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from worker.errors import DatabasePathError, DatabasePermissionError, login_name, running_user

_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


def check_worker_database(db: Path) -> None:
    """Raise a one-line error unless the worker can create or write ``db`` and its
    companions (``-wal``, ``-shm``, ``.lock``) beside it."""
    if db.is_dir():
        raise DatabasePathError(
            f"--db {db} is a folder; give the database file in it, "
            f"e.g. --db {db / 'tradescribe.db'}"
        )
    folder = db.parent
    if not folder.is_dir():
        raise DatabasePathError(
            f"the folder {folder} of --db {db} does not exist; create it (mkdir -p {folder}, "
            "owned by the worker's user) or fix --db"
        )
    user = running_user()
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DatabasePermissionError(
            f"the folder {folder} is not writable by {user}, and the database keeps its "
            f"-wal, -shm and .lock files beside it; fix: chown {login_name()} {folder}, "
            "or choose another --db"
        )
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno not in _DENIED:
                raise
            raise DatabasePermissionError(
                f"the database file {path} is read-only for {user} ({exc.strerror}); fix: "
                f"chown {login_name()} {path} (and its -wal and -shm), or chmod u+rw {path}"
            ) from None
        os.close(fd)
    _check_is_ours(db)


def _check_is_ours(db: Path) -> None:
    """An existing file must be a tradescribe database or a new, empty one: the worker
    would otherwise switch someone else's file to WAL and add its tables beside theirs."""
    if not db.is_file() or db.stat().st_size == 0:
        return
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            version = int(con.execute("PRAGMA user_version").fetchone()[0])
            tables = [r[0] for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name LIMIT 5"
            )]  # fmt: skip
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise DatabasePathError(
            f"--db {db} is not an SQLite database ({exc}); give the worker its own file"
        ) from None
    if version == 0 and tables:
        raise DatabasePathError(
            f"--db {db} is not a tradescribe database (it holds tables of its own: "
            f"{', '.join(tables)}); give the worker its own file, and import this one with "
            "`tradescribe import`"
        )


def create_private_file(path: Path) -> None:
    """Create the file readable by its owner only, if it does not exist yet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
