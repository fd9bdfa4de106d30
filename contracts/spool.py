"""The publisher's local spool: where events wait while Redis cannot be reached.

One append-only file per publishing process, ``<dir>/<source>.spool`` (or
``<source>+<pid>.spool`` when another live process of the same bot holds that
one), created mode 0600 and held with an exclusive ``flock``. Each line is the
wire JSON of one event, written with one ``write`` and fsync'd before the
publisher returns, so an event the bot was told about survives a crash. (A
lingering ``Publisher`` writes every event here, without fsync while Redis
answers: the page cache keeps it through a crash of the bot.)

The drain (run by the publishers) reads lines from the oldest file first, sends
them, and advances; a file fully sent is truncated (ours) or removed (one left
by a dead process of the same bot, or one we moved on from after ``ROTATE_BYTES``
of it were sent while it was still written to). A crash mid-drain re-sends some
lines on the next start: harmless, because the event log refuses an id it
already holds.

Only the standard library: a bot imports this through ``contracts``.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from contracts.errors import PublishError
from contracts.ids import event_id_time

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_EVENTS = 1_000_000
# A file being sent while it is written to is truncated whenever the drain catches up;
# one that never does is left for a new file once this much of it was sent.
ROTATE_BYTES = 16 * 1024 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9_.@-]")


def default_spool_dir() -> Path:
    """``$TRADESCRIBE_SPOOL_DIR``, else ``$XDG_STATE_HOME/tradescribe/spool``."""
    forced = os.environ.get("TRADESCRIBE_SPOOL_DIR")
    if forced:
        return Path(forced)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "tradescribe" / "spool"


@dataclass(frozen=True)
class SpoolStatus:
    """What a bot may want to know: how much waits, since when, and why."""

    events: int
    bytes: int
    age_s: float
    files: tuple[str, ...]
    last_error: str | None


class _File:
    """One spool file we hold the lock on, with how far it has been sent."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.sent = 0  # byte offset of the first line not yet sent
        self.size = os.fstat(fd).st_size
        self.events = 0
        self.synced = True  # every line written was fsync'd (False: a lingering publisher's)

    def close(self) -> None:
        os.close(self.fd)


class Chunk(NamedTuple):
    """Lines to send, oldest first, and where the file stands once they are sent."""

    file: _File
    end: int
    lines: list[str]


def _lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _line_id(line: bytes) -> str:
    """The event id of a spooled line ("~", after every id, when it has none)."""
    try:
        value = json.loads(line)["id"]
    except (ValueError, KeyError, TypeError):
        return "~"
    return value if isinstance(value, str) else "~"


def _line_time(line: bytes) -> float:
    """When the event in this line was made (its UUIDv7 id), else now."""
    when = event_id_time(_line_id(line))
    return when.timestamp() if when is not None else time.time()


class Spool:
    """The files of one publisher; thread-safe. ``append`` when Redis is away,
    ``chunk``/``advance`` to drain."""

    def __init__(
        self,
        directory: Path,
        source: str,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_events: int = DEFAULT_MAX_EVENTS,
    ) -> None:
        self.directory = directory
        self.name = _UNSAFE.sub("_", source)
        self.max_bytes = max_bytes
        self.max_events = max_events
        self.lock = threading.Lock()
        self.last_error: str | None = None
        self._files: list[_File] = []  # oldest first; the last one is where we append
        self._own: _File | None = None
        self._oldest_at: float | None = None
        self._adopt_left_behind()

    # -- what is waiting ---------------------------------------------------------

    @property
    def pending(self) -> int:
        """Events spooled and not yet sent (0: publish goes straight to Redis)."""
        return sum(f.events for f in self._files)

    def status(self) -> SpoolStatus:
        with self.lock:
            waiting = sum(f.size - f.sent for f in self._files)
            age = time.time() - self._oldest_at if self._oldest_at and waiting else 0.0
            return SpoolStatus(
                events=self.pending,
                bytes=waiting,
                age_s=max(0.0, age),
                files=tuple(str(f.path) for f in self._files if f.size > f.sent),
                last_error=self.last_error,
            )

    # -- writing -----------------------------------------------------------------

    def append(self, wire: str, *, durable: bool = True) -> None:
        """Write one event and fsync it (``durable=False``: the page cache keeps it through
        a crash of the bot, not of the machine); PublishError when the spool is full."""
        line = wire.encode() + b"\n"
        with self.lock:
            waiting = sum(f.size - f.sent for f in self._files)
            if self.pending >= self.max_events or waiting + len(line) > self.max_bytes:
                raise PublishError(
                    f"the spool in {self.directory} is full ({self.pending} events, "
                    f"{waiting} bytes; limits max_events={self.max_events}, "
                    f"max_bytes={self.max_bytes}) and Redis is still unreachable "
                    f"({self.last_error}); the event was NOT recorded"
                )
            try:
                own = self._own_file()
                os.write(own.fd, line)
                if durable:
                    os.fsync(own.fd)
                else:
                    own.synced = False
            except OSError as exc:
                raise PublishError(
                    f"cannot write the spool in {self.directory}: {exc} (set spool_dir or "
                    "TRADESCRIBE_SPOOL_DIR to a writable directory); the event was NOT recorded"
                ) from exc
            own.size += len(line)
            own.events += 1
            if self._oldest_at is None:
                self._oldest_at = _line_time(line)

    def _own_file(self) -> _File:
        if self._own is None:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            pid = os.getpid()
            candidates = [f"{self.name}.spool", f"{self.name}+{pid}.spool"]
            candidates += [f"{self.name}+{pid}+{k}.spool" for k in range(1, 10)]
            for candidate in candidates:
                path = self.directory / candidate
                fd = _lock(path)
                if fd is not None:
                    os.fchmod(fd, 0o600)
                    self._own = _File(path, fd)
                    self._own.sent = self._own.size
                    self._files.append(self._own)
                    break
            else:
                raise PublishError(
                    f"cannot lock a spool file in {self.directory}: another process of "
                    f"'{self.name}' holds {self.name}.spool and every per-pid one"
                )
        return self._own

    # -- draining ----------------------------------------------------------------

    def chunk(self, limit: int = 500) -> Chunk | None:
        """The next lines to send (``advance`` once they are sent), or None when all is sent."""
        with self.lock:
            for f in self._files:
                if f.size > f.sent:
                    lines: list[bytes] = []
                    for size in (256 << 10, 16 << 20):  # a bounded read, larger for long lines
                        data = os.pread(f.fd, min(f.size - f.sent, size), f.sent)
                        lines = data.split(b"\n")[:-1][:limit]  # only whole lines
                        if lines:
                            break
                    else:
                        raise PublishError(f"spool file {f.path} has a line over 16 MiB")
                    end = f.sent + sum(len(x) + 1 for x in lines)
                    return Chunk(f, end, [x.decode(errors="replace") for x in lines])
            return None

    def advance(self, chunk: Chunk) -> None:
        """These lines were sent: move on; empty files are truncated or removed."""
        f = chunk.file
        with self.lock:
            if f not in self._files:
                return  # closed meanwhile; these lines are sent again on the next start
            f.sent = chunk.end
            f.events = max(0, f.events - len(chunk.lines))
            if f.sent >= f.size:
                self._finish(f)
            elif f is self._own and f.sent >= ROTATE_BYTES:
                # Never caught up (a flood through a lingering publisher): new lines go
                # to a new file, and this one is removed once it is sent.
                self._own = None
            nxt = self._head()
            self._oldest_at = _line_time(nxt) if nxt else None
            self.last_error = None if not nxt else self.last_error

    def _finish(self, f: _File) -> None:
        if f is self._own:
            os.ftruncate(f.fd, 0)
            if f.synced:  # else nothing of it was ever promised to the disk
                os.fsync(f.fd)
            f.size = f.sent = f.events = 0
            f.synced = True
            return
        f.path.unlink(missing_ok=True)
        f.close()
        self._files.remove(f)

    def sync(self) -> None:
        """fsync what was written without it (Redis went away while events lingered)."""
        with self.lock:
            for f in self._files:
                if not f.synced:
                    os.fsync(f.fd)
                    f.synced = True

    def _head(self) -> bytes | None:
        for f in self._files:
            if f.size > f.sent:
                return os.pread(f.fd, 65536, f.sent).split(b"\n", 1)[0]
        return None

    def _adopt_left_behind(self) -> None:
        """Lock and queue the non-empty spool files a previous run of this bot left,
        oldest event first. They are sent and removed, but for ``<source>.spool`` when it
        holds the newest events: new events are appended to it."""
        if not self.directory.is_dir():
            return
        found = [
            p
            for p in self.directory.glob(f"{self.name}*.spool")
            if re.fullmatch(re.escape(self.name) + r"(\+\d+){0,2}\.spool", p.name)
        ]
        adopted: list[tuple[tuple[str, float], _File]] = []
        for path in found:
            if path.stat().st_size == 0:
                continue
            fd = _lock(path)
            if fd is None:
                continue  # a live process of the same bot owns it
            f = _File(path, fd)
            data = os.pread(fd, f.size, 0)
            whole = data.rfind(b"\n") + 1
            if whole < f.size:  # a torn last line from a crash: never acknowledged, drop it
                os.ftruncate(fd, whole)
                f.size = whole
            f.events = data.count(b"\n")
            adopted.append(((_line_id(data.split(b"\n", 1)[0]), path.stat().st_mtime), f))
        # By the id of the first event: one process's ids increase, so a file it moved on
        # from (rotated) sorts before the next; the mtimes of two files written within one
        # clock tick are equal.
        self._files = [f for _, f in sorted(adopted, key=lambda pair: pair[0])]
        if self._files and self._files[-1].path.name == f"{self.name}.spool":
            self._own = self._files[-1]  # the newest is our usual file: append to it again
        head = self._head()
        self._oldest_at = _line_time(head) if head else None

    def close(self) -> None:
        with self.lock:
            for f in self._files:
                f.close()
            self._files.clear()
            self._own = None
