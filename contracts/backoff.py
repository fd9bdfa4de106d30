"""Back-off delays for loops that retry while something is away (Redis, the disk).

One object per retrying loop: ask ``next()`` for the delay before each retry, and
``reset()`` after a success so the next outage starts short again::

    backoff = Backoff(first=0.05, factor=2.0, cap=settings.retry_max_s)
    while True:
        try:
            await step()
        except TRANSIENT as exc:
            delay = backoff.next()
            log.warning("step failed (%s); retrying in %.2fs", exc, delay)
            await anyio.sleep(delay)
        else:
            backoff.reset()

The delays are ``first``, ``first * factor``, ``first * factor**2``, ... never above
``cap`` (when ``first`` is already above ``cap``, every delay is ``cap``). No jitter:
the retrying parties here are one worker and a few bots, not a herd. It does not
sleep itself, so a thread (``Event.wait(delay)``) and a task (``anyio.sleep(delay)``)
use the same object. Only the standard library: a bot imports it through ``contracts``.
"""

from __future__ import annotations


class Backoff:
    """Growing delays, in seconds: ``next()`` before a retry, ``reset()`` after a success."""

    __slots__ = ("_delay", "cap", "factor", "first")

    def __init__(self, first: float = 0.05, factor: float = 2.0, cap: float = 2.0) -> None:
        if not first > 0 or not cap > 0 or not factor >= 1:
            raise ValueError(
                f"Backoff needs first > 0, cap > 0 and factor >= 1 "
                f"(got first={first}, factor={factor}, cap={cap})"
            )
        self.first = first
        self.factor = factor
        self.cap = cap
        self._delay = min(first, cap)

    def next(self) -> float:
        """The delay to wait before this retry; the one after it will be longer (up to cap)."""
        delay = self._delay
        self._delay = min(delay * self.factor, self.cap)
        return delay

    def reset(self) -> None:
        """The retried step succeeded: the next failure waits ``first`` again."""
        self._delay = min(self.first, self.cap)

    def __repr__(self) -> str:
        return (
            f"Backoff(first={self.first}, factor={self.factor}, cap={self.cap}, next={self._delay})"
        )
