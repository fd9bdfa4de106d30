"""The write process: merges and commits batches on its own SQLite connection.

Python's ``sqlite3`` gives up the GIL for every row it steps and takes it back
to bind the next one, so a write thread beside a busy event loop waits for the
GIL row by row (a batch's wall time was more than twice its CPU; docs/benchmark.md).
A child process has a GIL of its own: the event loop reads, validates and
projects the next batch on one core while this process merges the current one
into the entity rows it keeps (:class:`~worker.store.write.RowCache`) and commits it
on the other.

The protocol is private to the worker: on the child's stdin and stdout, frames
of an 8-byte little-endian length and a pickle. The parent sends a
:class:`~worker.store.write.Planned` batch; the child answers ``("ok", new_events)`` or
``("error", exception)`` after rolling back. The child exits when its stdin
closes, and on Linux when the worker dies (``PR_SET_PDEATHSIG``), so a worker
killed with -9 leaves no writer behind to commit after it.

    python -m worker.store.writer DB SYNCHRONOUS BUSY_TIMEOUT_MS CACHE_ROWS PARENT_PID
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import pickle
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import anyio

from worker.store.sql import WalBound, writer_pragmas
from worker.store.write import Planned, RowCache, write_planned

log = logging.getLogger(__name__)

_HEADER = 8
_PIPE_EMPTY_FITS = 65536  # Linux's pipe capacity: a write this size never blocks when empty
_PR_SET_PDEATHSIG = 1


class WriterGone(OSError):
    """The write process exited; the batch is not committed (it is retried)."""


def frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(_HEADER, "little") + data


def encode(batch: Planned) -> bytes:
    """A batch as :meth:`WriterProcess.write` sends it; pickled ahead of time, the
    write process need not wait for the pickling."""
    return frame(batch)


def send(out: IO[bytes], message: Any) -> None:
    out.write(frame(message))
    out.flush()


def receive(inp: IO[bytes]) -> Any:
    """The next message, or None at the end of the stream."""
    header = inp.read(_HEADER)
    if len(header) < _HEADER:
        return None
    size = int.from_bytes(header, "little")
    data = inp.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


def _send_frames(fd: int, outbox: queue.SimpleQueue[bytes | None]) -> None:
    """The sender thread: write each frame into the (blocking) pipe, giving up the GIL
    for the whole transfer however slowly the child reads; None ends it. A child that
    is gone is reported by the read side (end of its stdout)."""
    while (data := outbox.get()) is not None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            pass


async def _read_exact(fd: int, size: int) -> bytes | None:
    """``size`` bytes from a non-blocking pipe, or None at its end."""
    data = bytearray()
    while len(data) < size:
        try:
            chunk = os.read(fd, size - len(data))
        except BlockingIOError:
            await anyio.wait_readable(fd)
            continue
        if not chunk:
            return None
        data += chunk
    return bytes(data)


async def _read_message(fd: int) -> Any:
    header = await _read_exact(fd, _HEADER)
    if header is None:
        return None
    data = await _read_exact(fd, int.from_bytes(header, "little"))
    return None if data is None else pickle.loads(data)


class WriterProcess:
    """The parent's handle on the write process; one batch in flight at a time.

    The event loop pickles a batch and hands it to a sender thread, which writes it
    into the pipe while the loop decodes the next batch: written from the loop, the
    pipe (64 KiB) would fill and wait for the loop's next pause, leaving the child
    idle; and ``to_thread.run_sync`` would only start the write after that pause too.
    The reply is read by the loop itself.
    """

    def __init__(self, args: list[str], module: str = __name__, first: bytes = b"") -> None:
        """The child ``python -m module *args``: this module's SQLite writer, or
        :mod:`worker.store.pgwriter` (the same protocol) for PostgreSQL, which is sent
        ``first`` (a frame) on its stdin before anything else."""
        self._module = module
        self._first = first
        self._args = list(args)
        self._proc: subprocess.Popen[bytes] | None = None
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._sender: threading.Thread | None = None

    @classmethod
    def sqlite(
        cls, path: Path, synchronous: str, busy_timeout_ms: int, cache_rows: int = 20_000
    ) -> WriterProcess:
        args = [str(path), synchronous, str(int(busy_timeout_ms)), str(int(cache_rows))]
        return cls([*args, str(os.getpid())])

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the child, from the thread that stays (the death signal follows the
        thread that started it) and wait for its ready message. A child that could not
        start answers ``("error", exception)`` instead: raised here."""
        proc = self._spawn()
        assert proc.stdout is not None
        try:
            reply = receive(proc.stdout)  # blocking: the child opens the file first
        except (ValueError, OSError, EOFError, pickle.UnpicklingError):
            reply = None
        if reply != ("ready", proc.pid):
            self._reap()
            raise _not_started(reply)
        self._ready(proc)

    async def start_async(self) -> None:
        """:meth:`start`, the event loop going on while the child gets ready (a PostgreSQL
        one connects and takes its lock first): the loop's other tasks, the leases'
        renewals among them, are not held up."""
        proc = self._spawn()
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        try:
            reply = await _read_message(proc.stdout.fileno())
        except (ValueError, OSError, EOFError, pickle.UnpicklingError):
            reply = None
        except BaseException:  # cancelled: no child left behind
            self._reap()
            raise
        if reply != ("ready", proc.pid):
            # Refused (its lock held, say): its exit waited for off the event loop too.
            await anyio.to_thread.run_sync(self._reap)
            raise _not_started(reply)
        self._ready(proc)

    def _spawn(self) -> subprocess.Popen[bytes]:
        proc = self._proc = subprocess.Popen(
            [sys.executable, "-m", self._module, *self._args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert proc.stdin is not None
        if self._first:
            with contextlib.suppress(OSError):  # a child gone at once: its reply says so
                proc.stdin.write(self._first)
                proc.stdin.flush()
        return proc

    def _ready(self, proc: subprocess.Popen[bytes]) -> None:
        """The child said it is ready: the pipes set up for batches."""
        assert proc.stdin is not None
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        self._outbox = queue.SimpleQueue()
        self._sender = threading.Thread(
            target=_send_frames,
            args=(proc.stdin.fileno(), self._outbox),
            name="tradescribe-writer-send",
            daemon=True,
        )
        self._sender.start()

    async def write(self, batch: Planned | bytes) -> tuple[int, int]:
        """Commit one batch (or its :func:`encode`) in the child: (new events, id
        conflicts), as :func:`~worker.store.write.write_planned`; its exception is raised here."""
        if self._proc is None or self._proc.poll() is not None:
            if self._proc is not None:
                log.warning("the write process exited (code %s); starting it again",
                            self._proc.returncode)  # fmt: skip
                self._reap()
            try:
                await self.start_async()
            except WriterGone:
                raise
            except Exception as exc:  # e.g. its lock taken meanwhile: the store's outage
                raise WriterGone(f"the write process could not start again: {exc}") from exc
        proc = self._proc
        assert proc is not None
        assert proc.stdin is not None
        assert proc.stdout is not None
        data = batch if isinstance(batch, bytes) else frame(batch)
        try:
            if len(data) <= _PIPE_EMPTY_FITS:
                # The child read the last batch before it replied, so the pipe is empty
                # and a small batch goes in at once, without waking the sender thread
                # (that wake-up was half the p99 commit latency; docs/benchmark.md).
                os.write(proc.stdin.fileno(), data)
            else:
                self._outbox.put(data)
            reply = await _read_message(proc.stdout.fileno())
        except (BrokenPipeError, ValueError) as exc:
            raise WriterGone(f"the write process is gone: {exc}") from None
        if reply is None:
            code = proc.wait()
            raise WriterGone(f"the write process exited with code {code}")
        if not isinstance(reply, tuple):
            raise WriterGone(f"unexpected reply from the write process: {reply!r}")
        kind, value = reply
        if kind == "error":
            raise value
        new, conflicts = value
        return int(new), int(conflicts)

    def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        sender, self._sender = self._sender, None
        if sender is not None:
            self._outbox.put(None)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if sender is not None:
            sender.join(timeout=5)

    def close(self) -> None:
        """End the child: closing its stdin makes it exit after the batch in hand."""
        self._reap()


def _not_started(reply: Any) -> BaseException:
    """Why a child did not start: the exception it answered, or what it said instead."""
    if isinstance(reply, tuple) and len(reply) == 2 and reply[0] == "error":
        return reply[1]  # type: ignore[no-any-return]
    return WriterGone(f"the write process did not start: {reply!r}")


# -- the child ----------------------------------------------------------------------


def tune_gc() -> None:
    """Collect cycles far less often than Python's default (every 700 allocations).
    Both the worker and its write process call it.

    Each batch allocates a few hundred thousand objects (models, rows, tuples) that
    reference counting frees; the default thresholds ran a collection every few
    events and cost a third of validation time (docs/benchmark.md).
    What the process holds from its start (modules, the settings) is frozen out of
    collections altogether.
    """
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def die_with_parent(parent: int) -> None:
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


def error_for_parent(exc: BaseException) -> BaseException:
    """The exception itself when it survives pickling (its class decides the retry),
    else one of the same kind: an OSError for the store's failure, retried; a
    ValueError for the batch's, which the worker then commits event by event."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        # Imported here: it loads pydantic, which the SQLite write process never needs.
        from worker.entries import store_error

        text = f"{type(exc).__name__}: {exc}"
        return OSError(text) if store_error(exc) else ValueError(text)
    return exc


def child_main(argv: list[str]) -> int:
    path, synchronous, busy_timeout_ms = argv[0], argv[1], int(argv[2])
    cache_rows, parent = int(argv[3]), int(argv[4])
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The protocol owns stdout; anything printed by accident goes to stderr.
    inp = os.fdopen(os.dup(0), "rb")
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    con = _open(path, synchronous, busy_timeout_ms)
    cache = RowCache(con, cache_rows)
    tune_gc()  # a collection every 700 allocations would walk the row cache again and again
    send(out, ("ready", os.getpid()))
    wal = WalBound(f"{path}-wal")
    while (batch := receive(inp)) is not None:
        try:
            send(out, ("ok", write_planned(con, batch, cache)))  # rolls back on errors
        except BrokenPipeError:
            break
        except Exception as exc:
            send(out, ("error", error_for_parent(exc)))
            continue
        with contextlib.suppress(sqlite3.Error):  # committed already; tried after the next
            wal.after_commit(con)
    con.close()
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
