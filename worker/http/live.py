"""How the server learns of commits, and the live stream it feeds.

One task polls ``SELECT max(seq) FROM events`` on a read-only connection every
``poll_s`` (250 ms): the worker pays nothing for it (no trigger, no notify, no
extra write), and a commit reaches every open stream within one poll. In remote
mode it asks the worker's ``seq`` command instead (a quick request that reads the
file only after the worker committed something; see docs/dashboard.md). Each
stream then reads only the new events its principal may see and sends them as
Server-Sent Events; one with nothing in scope sends nothing but a keep-alive
comment every ``keepalive_s``, whatever the other tenants do.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread

from contracts.errors import TradescribeError
from worker.http.answers import Answers
from worker.http.shared import SharedAnswers
from worker.http.tokens import Principal

log = logging.getLogger(__name__)


class CommitWatch:
    """The latest committed ``seq``, and a way to wait for a newer one."""

    def __init__(self, answers: Answers, poll_s: float = 0.25) -> None:
        self.answers = answers
        self.poll_s = poll_s
        self.seq = 0
        self.polls = 0
        self.closing = False  # set on SIGTERM: open streams end so the server can stop
        self._changed = anyio.Event()
        # Committed events never change: streams of one scope at the same place share
        # one read (one request to the worker in remote mode) instead of one each.
        self._events = SharedAnswers(ttl_s=5.0, limit=64)

    async def events(self, principal: Principal, after: int, upto: int) -> list[dict[str, Any]]:
        """The events in (after, upto] that ``principal`` may see, at most 1000."""
        key = (principal.admin, principal.accounts, principal.sources, after, upto)

        async def read() -> list[dict[str, Any]]:
            return await anyio.to_thread.run_sync(self.answers.events_since, principal, after, upto)

        found: list[dict[str, Any]] = await self._events.get(key, read)
        return found

    def _wake(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def run(self) -> None:
        while not self.closing:
            try:
                seq = await anyio.to_thread.run_sync(self.answers.max_seq)
            except TradescribeError as exc:  # no file (or worker) yet: wait for the worker
                log.debug("commit watch: %s", exc)
                seq = self.seq
            except Exception:  # this loop must not die with the server's live streams
                log.exception("commit watch: cannot learn the last commit; trying again")
                seq = self.seq
            self.polls += 1
            if seq != self.seq:
                self.seq = seq
                self._wake()
            await anyio.sleep(self.poll_s)
        self._wake()

    async def wait_past(self, seq: int) -> int:
        while self.seq <= seq and not self.closing:
            await self._changed.wait()
        return self.seq


async def event_stream(
    watch: CommitWatch,
    principal: Principal,
    after: int | None,
    still_allowed: Callable[[], Awaitable[bool]],
    keepalive_s: float = 15.0,
) -> AsyncIterator[str]:
    """The SSE text for one client: a ``commit`` message per visible event. The
    token is looked up again before each batch and keep-alive: a revoked token's
    stream ends then."""
    last = watch.seq if after is None else after
    yield f"retry: 1000\nevent: hello\ndata: {json.dumps({'seq': last})}\n\n"
    while True:
        upto = None
        with anyio.move_on_after(keepalive_s):
            upto = await watch.wait_past(last)
        if watch.closing or not await still_allowed():
            return
        if upto is None:
            yield ": keep-alive\n\n"
            continue
        try:
            rows = await watch.events(principal, last, upto)
        except TradescribeError as exc:  # the worker went away: the browser reconnects later
            yield f"event: unavailable\ndata: {json.dumps({'error': str(exc)})}\n\n"
            return
        last = rows[-1]["seq"] if len(rows) == 1000 else upto
        for row in rows:
            yield f"id: {row['seq']}\nevent: commit\ndata: {json.dumps(row)}\n\n"
