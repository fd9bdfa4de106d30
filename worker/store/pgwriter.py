"""The PostgreSQL write process: commits planned batches on a connection of its own.

On PostgreSQL a batch's commit is the worker's Python (merging the changes into the
rows read ``FOR UPDATE``, encoding the statements) taking turns with the server's
work on them; in the worker's process that Python also takes turns with decoding and
planning the next batch, on one core. This child runs the commit on the other core, as
SQLite's write process does (:mod:`worker.store.writer`, the same protocol and the
same parent handle): the event loop decodes and plans batch n+1 while this process
and PostgreSQL commit batch n (docs/benchmark.md, issue 17).

The child holds the writer's lock (the session advisory lock of
:class:`~worker.store.postgres.PostgresStore`, or a partition's) on its connection:
the lock and the writes are one session, so a connection lost loses both, and the
lock is taken again before the next write (or that write fails and is retried). It
dies with the worker (``PR_SET_PDEATHSIG``): its transaction is then rolled back and
its lock released by the server. It answers ``("ready", pid)`` once it holds the
lock, or ``("error", AlreadyRunningError)`` naming the holder.

    python -m worker.store.pgwriter URL PARENT_PID [PARTITION STREAM]

The URL comes on stdin's first frame, not the command line: it may hold a password.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from typing import IO

from worker.store.writer import (
    WriterProcess,
    die_with_parent,
    error_for_parent,
    frame,
    receive,
    send,
    tune_gc,
)


def handle(url: str, partition: tuple[int, str] | None) -> WriterProcess:
    """The parent's handle: a write process for this database (and partition)."""
    args = [str(os.getpid())]
    if partition is not None:
        args += [str(partition[0]), partition[1]]
    return WriterProcess(args, __name__, first=frame(url))


async def _serve(url: str, parent: int, partition: tuple[int, str] | None,
                 inp: IO[bytes], out: IO[bytes]) -> int:  # fmt: skip
    from worker.store.postgres import PostgresStore  # asyncpg: an extra

    store: PostgresStore | None = None
    try:
        store = await PostgresStore.open(url, partition, name_pid=parent, role="writer")
        await store.lock_writer({})
        await store.stage()
    except Exception as exc:
        send(out, ("error", error_for_parent(exc)))
        if store is not None:  # its session closed before this process exits
            with contextlib.suppress(Exception):
                await store.close()
        return 1
    send(out, ("ready", os.getpid()))
    try:
        # A blocking read: nothing else runs on this loop between two batches.
        while (batch := receive(inp)) is not None:
            try:
                result = await store.commit_planned(batch)
            except Exception as exc:  # rolled back; the worker decides what follows
                send(out, ("error", error_for_parent(exc)))
                continue
            send(out, ("ok", result))
    except BrokenPipeError:
        pass
    finally:
        # The lock goes with the session anyway; unlocked first so that it is free when
        # the worker sees this process exit. A connection lost has nothing to release.
        with contextlib.suppress(Exception):
            await store.unlock_writer()
        with contextlib.suppress(Exception):
            await store.close()
    return 0


def child_main(argv: list[str]) -> int:
    parent = int(argv[0])
    partition = (int(argv[1]), argv[2]) if len(argv) >= 3 else None
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    inp = os.fdopen(os.dup(0), "rb")
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # the protocol owns stdout; anything printed by accident goes to stderr
    url = receive(inp)
    if not isinstance(url, str):
        return 2
    tune_gc()
    return asyncio.run(_serve(url, parent, partition, inp, out))


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
