"""Exceptions a bot may see, and a compact rendering of validation errors."""

from __future__ import annotations

from pydantic import ValidationError

from contracts.events import NO_NUL
from contracts.vocabulary import EVENT_TYPES


class TradescribeError(Exception):
    """Base of every error raised by tradescribe; its message says what to do."""


class PublishError(TradescribeError):
    """An event could not be handed to Redis (and was not spooled)."""


class NoWorkerError(TradescribeError):
    """No worker answered on the request channel in time."""


class ForgedReplyError(NoWorkerError):
    """No genuine reply in time, and replies not signed by the worker were refused."""


def describe_validation_error(exc: ValidationError, limit: int = 5) -> str:
    """One line per problem, ``field.path: message``, without pydantic's URLs."""
    parts = []
    for err in exc.errors(include_url=False)[:limit]:
        loc = [str(p) for p in err["loc"]]
        # The tagged union puts the type name first; it adds nothing for a reader.
        if loc and "." in loc[0] and loc[0] in EVENT_TYPES:
            loc = loc[1:]
        where = ".".join(loc) or "event"
        message = err["msg"]
        if err["type"] == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == NO_NUL:
            message = "must not contain a NUL character"
        parts.append(f"{where}: {message}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"(+{more} more)")
    return "; ".join(parts)


class RedisUnreachableError(TradescribeError):
    """Redis itself could not be reached (connection refused, timeout, auth)."""


class RequestFailedError(TradescribeError):
    """The worker answered a request with an error reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
