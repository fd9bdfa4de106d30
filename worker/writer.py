"""The write process: commits planned batches on its own SQLite connection.

Python's ``sqlite3`` gives up the GIL for every row it steps and takes it back
to bind the next one, so a write thread beside a busy event loop waits for the
GIL row by row (a 2,000-event batch took 97 ms of wall time for 39 ms of CPU).
A child process has a GIL of its own: the event loop reads, validates and plans
the next batch on one core while this process commits the current one on the
other.

The protocol is private to the worker: on the child's stdin and stdout, frames
of an 8-byte little-endian length and a pickle. The parent sends a
:class:`~worker.commit.Prepared`; the child answers ``("ok", new_events)`` or
``("error", exception)`` after rolling back. The child exits when its stdin
closes, and on Linux when the worker dies (``PR_SET_PDEATHSIG``), so a worker
killed with -9 leaves no writer behind to commit after it.

    python -m worker.writer DB SYNCHRONOUS BUSY_TIMEOUT_MS PARENT_PID
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import anyio

from worker.commit import Prepared, write_prepared, writer_pragmas

log = logging.getLogger(__name__)

_HEADER = 8
_PR_SET_PDEATHSIG = 1


class WriterGone(OSError):
    """The write process exited; the batch is not committed (it is retried)."""


def _send(out: IO[bytes], message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(len(data).to_bytes(_HEADER, "little"))
    out.write(data)
    out.flush()


def _receive(inp: IO[bytes]) -> Any:
    """The next message, or None at the end of the stream."""
    header = inp.read(_HEADER)
    if len(header) < _HEADER:
        return None
    size = int.from_bytes(header, "little")
    data = inp.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


class WriterProcess:
    """The parent's handle on the write process; one batch in flight at a time."""

    def __init__(self, path: Path, synchronous: str, busy_timeout_ms: int) -> None:
        self._args = [str(path), synchronous, str(int(busy_timeout_ms)), str(os.getpid())]
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the child, from the thread that stays (the death signal follows the
        thread that started it) and wait for its ready message."""
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "worker.writer", *self._args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            reply = self._roundtrip(None)
        except WriterGone:
            self._reap()
            raise
        if reply != ("ready", self._proc.pid):
            self._reap()
            raise WriterGone(f"the write process did not start: {reply!r}")

    async def write(self, batch: Prepared) -> int:
        """Commit one planned batch in the child; its exception is raised here."""
        if self._proc is None or self._proc.poll() is not None:
            if self._proc is not None:
                log.warning("the write process exited (code %s); starting it again",
                            self._proc.returncode)  # fmt: skip
                self._reap()
            self.start()
        kind, value = await anyio.to_thread.run_sync(self._roundtrip, batch)
        if kind == "error":
            raise value
        return int(value)

    def _roundtrip(self, message: Prepared | None) -> tuple[str, Any]:
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        try:
            if message is not None:
                _send(proc.stdin, message)
            reply = _receive(proc.stdout)
        except (BrokenPipeError, ValueError) as exc:
            raise WriterGone(f"the write process is gone: {exc}") from None
        if reply is None:
            code = proc.wait()
            raise WriterGone(f"the write process exited with code {code}")
        if not isinstance(reply, tuple):
            raise WriterGone(f"unexpected reply from the write process: {reply!r}")
        return reply

    def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        """End the child: closing its stdin makes it exit after the batch in hand."""
        self._reap()


# -- the child ----------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the parent dies (Linux); its open transaction is then rolled back."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)  # the parent died before the signal was armed


def _open(path: str, synchronous: str, busy_timeout_ms: int) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None)
    for pragma in writer_pragmas(synchronous, busy_timeout_ms):
        con.execute(pragma)
    return con


def _error(exc: BaseException) -> BaseException:
    """The exception itself when it survives pickling (its class decides the retry)."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return sqlite3.OperationalError(f"{type(exc).__name__}: {exc}")
    return exc


def child_main(argv: list[str]) -> int:
    path, synchronous, busy_timeout_ms, parent = argv[0], argv[1], int(argv[2]), int(argv[3])
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The protocol owns stdout; anything printed by accident goes to stderr.
    inp = os.fdopen(os.dup(0), "rb")
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    con = _open(path, synchronous, busy_timeout_ms)
    _send(out, ("ready", os.getpid()))
    while (batch := _receive(inp)) is not None:
        try:
            _send(out, ("ok", write_prepared(con, batch)))
        except BrokenPipeError:
            break
        except Exception as exc:
            if con.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    con.execute("ROLLBACK")
            _send(out, ("error", _error(exc)))
    con.close()
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
