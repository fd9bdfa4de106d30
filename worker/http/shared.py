"""One computation of a costly answer shared by everyone who asks for the same one.

Twenty dashboards polling every 300 ms asked for about 66 dashboard computations a
second from one process on two cores that the worker needs too; most of them were
the same answer (same scope, same filters, no commit in between). Here concurrent
askers of one key wait for the one computation in flight, and an answer is reused
for ``ttl_s``. The key includes the last committed ``seq`` the server has seen, so
a commit is never hidden behind a reused answer for longer than the server takes
to see it (its commit watch polls every 250 ms).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import anyio


class SharedAnswers:
    """``await get(key, compute)``: ``compute()`` once per key at a time, kept ``ttl_s``."""

    def __init__(self, ttl_s: float = 1.0, limit: int = 256) -> None:
        self.ttl_s = ttl_s
        self.limit = limit
        self.computed = 0  # how many times compute() ran (for the tests and the bench)
        self._kept: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._running: dict[Hashable, anyio.Event] = {}

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[Any]]) -> Any:
        while True:
            kept = self._kept.get(key)
            if kept is not None and time.monotonic() - kept[0] < self.ttl_s:
                return kept[1]
            running = self._running.get(key)
            if running is None:
                break
            await running.wait()  # then take its answer, or compute if it failed
        done = self._running[key] = anyio.Event()
        try:
            value = await compute()
            self.computed += 1
            self._kept[key] = (time.monotonic(), value)
            self._kept.move_to_end(key)
            while len(self._kept) > self.limit:
                self._kept.popitem(last=False)
            return value
        finally:
            del self._running[key]
            done.set()
