"""One computation of a costly answer shared by everyone who asks for the same one.

Twenty dashboards polling every 300 ms asked for about 66 dashboard computations a
second from one process on two cores that the worker needs too; most of them were
the same answer (same token, same filters). Here concurrent askers of one key wait
for the one computation in flight, and an answer is reused for ``ttl_s``, but only
for an asker whose ``at_least`` (the last commit it has heard of, from the live
stream) the answer already holds: each answer remembers the commit the server had
seen when it began. So a page never gets an answer older than a commit it was told
of, and a burst of commits costs a few computations, not one per commit per page.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import anyio


class SharedAnswers:
    """``await get(key, compute, seen, at_least)``: ``compute()`` once per key at a time;
    its answer, made when commit ``seen`` was the last, serves ``at_least <= seen``
    for ``ttl_s``."""

    def __init__(self, ttl_s: float = 1.0, limit: int = 256) -> None:
        self.ttl_s = ttl_s
        self.limit = limit
        self.computed = 0  # how many times compute() ran (for the tests and the bench)
        self._kept: OrderedDict[Hashable, tuple[float, int, Any]] = OrderedDict()
        self._running: dict[Hashable, anyio.Event] = {}

    async def get(
        self,
        key: Hashable,
        compute: Callable[[], Awaitable[Any]],
        seen: int = 0,
        at_least: int = 0,
    ) -> Any:
        while True:
            kept = self._kept.get(key)
            if kept is not None and time.monotonic() - kept[0] < self.ttl_s and kept[1] >= at_least:
                return kept[2]
            running = self._running.get(key)
            if running is None:
                break
            await running.wait()  # then take its answer, or compute if it failed
        done = self._running[key] = anyio.Event()
        try:
            value = await compute()
            self.computed += 1
            self._kept[key] = (time.monotonic(), seen, value)
            self._kept.move_to_end(key)
            while len(self._kept) > self.limit:
                self._kept.popitem(last=False)
            return value
        finally:
            del self._running[key]
            done.set()
