"""One computation of a costly answer shared by everyone who asks for the same one.

Twenty dashboards polling every 300 ms asked for about 66 dashboard computations a
second from one process on two cores that the worker needs too; most of them were
the same answer (same token, same filters). Here concurrent askers of one key wait
for the one computation in flight, and an answer is reused for ``ttl_s``, but only
for an asker whose ``at_least`` (the last commit it has heard of, from the live
stream) the answer already holds: each answer remembers the commit the server had
seen when it began. So a page never gets an answer older than a commit it was told
of, and a burst of commits costs a few computations, not one per commit per page.

While nothing commits, an answer is the answer: as long as the last commit the
server has heard of is still the one it had heard of when the answer began, the
answer is reused by everyone for up to ``idle_s`` (the same promise: it holds every
commit the server had told anyone of), never past the end of the quarter hour it
was made in (every zone's midnight falls on one: "today", the week and the
calendar's default range move with the clock, not with commits).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

import anyio

QUARTER_HOUR_S = 900


def _quarter_hour() -> int:
    return int(time.time() // QUARTER_HOUR_S)


@dataclass(frozen=True)
class _Kept:
    made: float  # time.monotonic() when its computation ended
    seen: int  # the last commit the server had heard of then
    quarter: int  # the quarter hour it began in
    value: Any


class SharedAnswers:
    """``await get(key, compute, seen, at_least)``: ``compute()`` once per key at a
    time; its answer, begun when commit ``seen`` was the last heard of, serves
    ``at_least <= seen`` for ``ttl_s``, and anyone for ``idle_s`` while ``seen`` is
    still the last commit heard of."""

    def __init__(self, ttl_s: float = 1.0, limit: int = 256, idle_s: float = 0.0) -> None:
        self.ttl_s = ttl_s
        self.idle_s = idle_s
        self.limit = limit
        self.computed = 0  # how many times compute() ran (for the tests and the bench)
        self._kept: OrderedDict[Hashable, _Kept] = OrderedDict()
        self._running: dict[Hashable, anyio.Event] = {}

    def _usable(self, kept: _Kept | None, seen: int, at_least: int) -> bool:
        if kept is None:
            return False
        age = time.monotonic() - kept.made
        if age < self.ttl_s and kept.seen >= at_least:
            return True
        unchanged = kept.seen == seen >= at_least  # no commit heard of since it began
        return unchanged and age < self.idle_s and kept.quarter == _quarter_hour()

    async def get(
        self,
        key: Hashable,
        compute: Callable[[], Awaitable[Any]],
        seen: int = 0,
        at_least: int = 0,
    ) -> Any:
        while True:
            kept = self._kept.get(key)
            if self._usable(kept, seen, at_least):
                return kept.value  # type: ignore[union-attr]
            running = self._running.get(key)
            if running is None:
                break
            await running.wait()  # then take its answer, or compute if it failed
        done = self._running[key] = anyio.Event()
        quarter = _quarter_hour()
        try:
            value = await compute()
            self.computed += 1
            self._kept[key] = _Kept(time.monotonic(), seen, quarter, value)
            self._kept.move_to_end(key)
            while len(self._kept) > self.limit:
                self._kept.popitem(last=False)
            return value
        finally:
            del self._running[key]
            done.set()
