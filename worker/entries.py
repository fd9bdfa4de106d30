"""What a stream entry becomes: a decoded event, or a dead letter with its reason.

Pure functions, no I/O: :func:`decode` validates each entry on its own, so nothing one
entry holds can fail its neighbours; :func:`store_error` tells a failure of the store
(retried, never counted against an entry) from one an entry caused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sqlite3
import sys
from dataclasses import replace

from pydantic import ValidationError

from contracts.errors import describe_validation_error
from contracts.events import WIRE_FIELD, parse_event
from worker.fastdecode import fast_decode
from worker.store.batch import DeadLetter, Decoded

log = logging.getLogger(__name__)

Entry = tuple[str, dict[bytes, bytes]]  # a stream id and the entry's fields
_WIRE_KEY = WIRE_FIELD.encode()


def decode(
    entries: list[Entry], deliveries: dict[str, int], limit: int, seen: set[str] | None = None
) -> tuple[list[Decoded], list[DeadLetter], list[Entry]]:
    """Each entry validated on its own: whatever one raises makes it a dead letter
    with the reason, never the batch's failure.

    A batch holds each event id once, so that the store can tell an event it takes
    from a copy it refuses by the id alone: a second entry with an id seen before in
    ``entries`` is returned apart (third value), to go into the next batch, where
    the store finds it a duplicate or an id conflict as for any id in the log.
    ``seen``: the ids of the batch's entries decoded before these (a batch decoded in
    parts), added to.
    """
    good: list[Decoded] = []
    dead: list[DeadLetter] = []
    repeats: list[Entry] = []
    if seen is None:
        seen = set()
    for stream_id, fields in entries:
        if not fields:
            continue  # deleted from the stream before we read it; nothing to store
        raw = fields.get(_WIRE_KEY)
        times = deliveries.get(stream_id, 1)
        try:
            if raw is None:
                dead.append(_no_wire_field(stream_id, fields, times))
            elif len(raw) > limit:
                reason = f"entry is {len(raw)} bytes, more than max_message_bytes={limit}"
                dead.append(bounded(stream_id, raw, reason, times))
            else:
                body = raw.decode()
                d = Decoded(stream_id, body, fast_decode(raw) or parse_event(raw))
                if d.event.id in seen:
                    repeats.append((stream_id, fields))
                else:
                    seen.add(d.event.id)
                    good.append(d)
                continue
        except ValidationError as exc:
            reason = "invalid event: " + describe_validation_error(exc)
            dead.append(_dead(stream_id, raw or b"", reason, times))
        except UnicodeDecodeError as exc:
            dead.append(_dead(stream_id, raw or b"", f"not UTF-8: {exc}", times))
        except Exception as exc:  # no entry may stop the worker
            log.exception("decoding stream entry %s failed", stream_id)
            reason = f"cannot be decoded: {_describe(exc)}"
            dead.append(_dead(stream_id, raw or b"", reason, times))
        log.warning("dead-lettering stream entry %s: %s", stream_id, dead[-1].reason[:300])
    return good, dead, repeats


def _printable(value: bytes) -> str:
    """Any bytes as text, never failing (non-UTF-8 bytes become backslash escapes)."""
    return value.decode(errors="backslashreplace")


_KEEP_BYTES = 4096  # of an oversized entry: enough for a person to see what it was
_ID_IN_JSON = re.compile(rb'"id"\s*:\s*"([^"\\]{1,100})"')


def _guess_id(raw: bytes) -> str | None:
    """The event id an undecodable entry seems to carry (for the dead letter's row)."""
    if len(raw) > _KEEP_BYTES:
        found = _ID_IN_JSON.search(raw, 0, _KEEP_BYTES)
        return found.group(1).decode(errors="replace") if found else None
    try:
        value = json.loads(raw)
        event_id = value.get("id") if isinstance(value, dict) else None
        return event_id[:100] if isinstance(event_id, str) else None
    except (ValueError, RecursionError):
        return None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:1000]


def _dead(stream_id: str, raw: bytes, reason: str, deliveries: int = 1) -> DeadLetter:
    return DeadLetter(stream_id, raw, reason, _guess_id(raw), deliveries)


def bounded(stream_id: str, raw: bytes, reason: str, deliveries: int = 1) -> DeadLetter:
    """A dead letter holding at most ``_KEEP_BYTES`` of ``raw`` (with its size and
    SHA-256 when that is not all of it), so that a flood of huge entries costs the
    database little."""
    if len(raw) <= _KEEP_BYTES:
        return _dead(stream_id, raw, reason, deliveries)
    digest = hashlib.sha256(raw).hexdigest()
    kept = raw[:_KEEP_BYTES]
    return DeadLetter(stream_id, kept, reason, _guess_id(raw), deliveries, len(raw), digest)


def _no_wire_field(stream_id: str, fields: dict[bytes, bytes], deliveries: int) -> DeadLetter:
    names = ", ".join(sorted(_printable(k) for k in fields))[:200]
    reason = f"entry has no '{WIRE_FIELD}' field (it has: {names})"
    raw = json.dumps({_printable(k): _printable(v) for k, v in fields.items()}).encode()
    return bounded(stream_id, raw, reason, deliveries)


def store_error(exc: BaseException) -> bool:
    """Whether a commit failed because of the store itself (disk, lock, I/O, a write
    process gone), not because of what it was given: then it is retried, and never
    counts against an entry."""
    if isinstance(exc, OSError):
        return True
    postgres = _postgres_store_error(exc)
    if postgres is not None:
        return postgres
    return isinstance(exc, sqlite3.Error) and not isinstance(exc, _DATA_ERRORS)


def _postgres_store_error(exc: BaseException) -> bool | None:
    """For an asyncpg error (None for any other): a value the database refused (SQLSTATE
    class 22 data exception, 23 integrity, or a value the driver cannot encode) is the
    entry's; anything else (connection, disk, locks, shutdown, schema) is the store's."""
    asyncpg = sys.modules.get("asyncpg")  # loaded only by the PostgreSQL store
    if asyncpg is None:
        return None
    if isinstance(exc, asyncpg.InternalClientError):
        # the driver's own state (e.g. "cannot switch to state 15; another operation is
        # in progress" as a server shuts down): the connection's fault, never the entry's
        return True
    if not isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return None
    if isinstance(exc, asyncpg.exceptions._base.DataError):
        return False
    return str(getattr(exc, "sqlstate", "") or "")[:2] not in ("22", "23")


_DATA_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
)


def without_bytes(d: DeadLetter, exc: BaseException) -> DeadLetter:
    reason = f"{d.reason} (its bytes could not be stored: {_describe(exc)})"
    return replace(d, raw=b"", reason=reason[:2000], raw_size=d.raw_size or len(d.raw))


def unstorable(d: Decoded, exc: BaseException) -> DeadLetter:
    reason = f"cannot be stored: {_describe(exc)}"
    return DeadLetter(d.stream_id, d.body.encode(), reason, d.event.id)
