"""Reads of sums shared by every request to one SQLite file while nothing commits to it.

The sums of all history (a full read of ``trade_months``, 6-7.5 ms at 1,000,000 trades)
are in nearly every route: history's summary, P&L, bots, the CSV page, the dashboard;
a calendar in a local zone reads a year of ``trade_days`` and the pieces of days from
``trades`` (~15 ms). Between two commits they are the same for everyone asking with
the same filters. Each connection ``serve`` opens gets the memo of the file's current
version (``ReadConnection.memo``, read by ``contracts.query_stats.remembered``), so such
a read is made once per version, not once per request.

The version is SQLite's ``PRAGMA data_version`` on one connection kept open per file
for that alone: it changes when any other connection (the worker, a migration, a
rebuild in place) commits to the file, and costs a few microseconds to ask. With the
file's device and inode it also sees a file put in the path's place. A read begun
after the version was asked holds at least that version's data, so a memo entry is
never older than what its reader would have read itself (it can be newer, as any
later statement of the same answer already can: each statement is its own snapshot).

A few reads are kept across versions too (:class:`Lasting`), under a key that holds
what they depend on: a bot's last close on its last trading day (a walk of that day's
closes, every bot's: 5-6 ms per idle bot after 40,000 closes of others that day) is
kept under the number of the bot's events in the log, which every change to its rows
adds to (``worker/http/reads.py``). Each is read again ``LASTING_S`` after it was made
at the latest, for what no event shows (a database rewritten by a migration). The
sums of months before the day before yesterday are kept the same way, under the
``meta`` row the worker bumps whenever a commit changes one of them
(``contracts/query_stats.py``: ``settled``).

PostgreSQL gets no shared memo (no such cheap counter): each answer reads its sums.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from contracts.query_db import SQLITE, ReadConnection

# Entries one version keeps at most (a key is a statement and its parameters: each
# distinct filter set or zone adds a few); past it, reads are made and not kept.
MAX_ENTRIES = 4096

Memo = dict[Any, Any]

# How long a kept read serves at most (:class:`Lasting`), and how many are kept per file.
LASTING_S = 60.0
LASTING_ENTRIES = 4096


class Lasting:
    """Reads of one file kept across its versions: ``get(key, read)`` is ``read()``
    made once per ``key`` each ``LASTING_S``. The key must hold everything the read
    depends on that can change (see the module's docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()

    def get(self, key: Hashable, read: Callable[[], Any]) -> Any:
        now = time.monotonic()
        with self._lock:
            found = self._kept.get(key)
        if found is not None and now - found[0] < LASTING_S:
            return found[1]
        value = read()
        with self._lock:
            self._kept[key] = (now, value)
            self._kept.move_to_end(key)
            while len(self._kept) > LASTING_ENTRIES:
                self._kept.popitem(last=False)
        return value


class FileMemo:
    """The memo of one SQLite file's current version (any file: the token file too)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._watch: sqlite3.Connection | None = None
        self._key: tuple[int, int, int] | None = None
        self._memo: Memo = {}
        self.lasting = Lasting()  # a new one for a file put in the path's place

    def current(self) -> Memo:
        """The memo for what the file holds now (a new, empty one after a commit)."""
        st = os.stat(self.path)
        ident = (st.st_dev, st.st_ino)
        with self._lock:
            if self._watch is None or self._key is None or self._key[:2] != ident:
                if self._watch is not None:
                    self._watch.close()
                    self.lasting = Lasting()
                self._watch = sqlite3.connect(
                    f"{self.path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
                )
            version = int(self._watch.execute("PRAGMA data_version").fetchone()[0])
            key = (*ident, version)
            if key != self._key:
                self._key, self._memo = key, {}
            return self._memo

    def close(self) -> None:
        with self._lock:
            if self._watch is not None:
                self._watch.close()
                self._watch = None
                self._key = None


_FILES: dict[Path, FileMemo] = {}
_FILES_LOCK = threading.Lock()


def attach(con: ReadConnection, db: Path | str) -> None:
    """Give ``con`` (a connection to ``db``) the shared memo of ``db``'s current
    version; a PostgreSQL connection keeps its own (none, or one answer's)."""
    if con.d is not SQLITE or con.memo is not None:
        return
    path = Path(db).expanduser().resolve()
    memo = _FILES.get(path)
    if memo is None:
        with _FILES_LOCK:
            memo = _FILES.setdefault(path, FileMemo(path))
    con.memo = memo.current()
    con.lasting = memo.lasting
