"""What every importer shares: records, skips, stable ids and lenient parsing.

An importer reads one legacy file and yields, per source record, either a
:class:`Record` (the validated events it becomes) or a :class:`Skip` (where it
is and why it cannot be mapped). Nothing is dropped silently.

Event ids come from :func:`contracts.ids.stable_event_id` over the record's own
time, the *file identity* and the row key. The file identity is the format name
plus the file's absolute, resolved path: the same file imported twice gives
the same ids (the event log refuses the second copy) whatever its contents
became meanwhile, and two bots' files of the same name stay distinct. Moving
a file before re-importing it gives new ids; ``--file-id`` pins the identity.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from contracts.errors import describe_validation_error
from contracts.events import AnyEvent, build_event
from contracts.ids import stable_event_id


@dataclass(frozen=True, slots=True)
class Record:
    """One source record and the events it becomes."""

    where: str
    events: tuple[AnyEvent, ...]


@dataclass(frozen=True, slots=True)
class Skip:
    """A source record that cannot be mapped: ``file:line`` and why."""

    where: str
    reason: str


Item = Record | Skip


class RecordError(ValueError):
    """A record's value cannot be mapped; the message is the reason shown."""


@dataclass(frozen=True)
class ImportContext:
    """The envelope every imported event gets, and the options of the format."""

    fmt: str
    source: str
    account: str = "default"
    plugin_id: str = "legacy"
    mode: str = "live"
    tz: dt.tzinfo = dt.UTC
    mapping: Path | None = None
    file_id: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def identity(self, path: Path) -> str:
        return f"{self.fmt}:{self.file_id or path.resolve()}"


class EventMaker:
    """Builds the events of one file with ids derived from (time, file, row key)."""

    def __init__(self, ctx: ImportContext, path: Path) -> None:
        self.ctx = ctx
        self.identity = ctx.identity(path)

    def event(
        self,
        event_type: str,
        data: dict[str, Any],
        when: dt.datetime,
        *row_key: str,
        plugin_id: str | None = None,
    ) -> AnyEvent:
        data = {k: v for k, v in data.items() if v is not None}
        return build_event(
            event_type,
            data,
            id=stable_event_id(when, self.identity, *row_key, event_type),
            ts=when,
            source=self.ctx.source,
            account=self.ctx.account,
            plugin_id=plugin_id or self.ctx.plugin_id,
            mode=self.ctx.mode,
        )


def attempt(where: str, build: Callable[[], list[AnyEvent]]) -> Item:
    """Run one record's mapping; any mapping or validation failure becomes a Skip."""
    try:
        events = build()
    except ValidationError as exc:
        return Skip(where, "invalid: " + describe_validation_error(exc, limit=3))
    except (RecordError, ValueError, KeyError, TypeError, AttributeError, InvalidOperation) as exc:
        reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        return Skip(where, reason or type(exc).__name__)
    if not events:
        return Skip(where, "record holds nothing to import")
    return Record(where, tuple(events))


_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y", "%d.%m.%Y")


def parse_time(value: Any, tz: dt.tzinfo, what: str = "time") -> dt.datetime:
    """A legacy timestamp as an aware datetime; naive ones are read in ``tz``."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    else:
        text = str(value or "").strip()
        if not text:
            raise RecordError(f"{what} is empty")
        try:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            for fmt in _FORMATS:
                try:
                    moment = dt.datetime.strptime(text, fmt)
                    break
                except ValueError:
                    continue
            else:
                raise RecordError(f"{what} {text!r} is not a date or time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def optional_time(value: Any, tz: dt.tzinfo, what: str = "time") -> dt.datetime | None:
    if value is None or str(value).strip() == "":
        return None
    return parse_time(value, tz, what)


def number(value: Any) -> Decimal | None:
    """A decimal from a legacy cell; empty cells are None, junk raises RecordError."""
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip().replace(",", "")
    if not text or text.lower() in {"nan", "none", "null"}:
        return None
    try:
        result = Decimal(text)
    except InvalidOperation:
        raise RecordError(f"{value!r} is not a number") from None
    if not result.is_finite():
        raise RecordError(f"{value!r} is not a finite number")
    return result


def positive(value: Any) -> Decimal | None:
    """A price that legacy files store as 0 when unknown: 0 and empty mean None."""
    result = number(value)
    return result if result is not None and result > 0 else None


def text(value: Any) -> str | None:
    if value is None:
        return None
    result = str(value).strip()
    return result or None


def timezone(name: str) -> dt.tzinfo:
    if name.upper() == "UTC":
        return dt.UTC
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError) as exc:
        raise RecordError(f"unknown time zone {name!r} (use e.g. UTC or Asia/Kolkata)") from exc


Reader = Callable[[Path, ImportContext], Iterator[Item]]


def csv_rows(rows: csv.DictReader[str], path: Path) -> Iterator[tuple[int, dict[str, Any]] | Skip]:
    """Each row with the line it ends on, or a :class:`Skip` for a record the csv module
    refuses (a field over its 128 KiB limit, a NUL byte), so the rows after it still come."""
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Skip(f"{path}:{rows.reader.line_num}", f"unreadable CSV record: {exc}")
            continue
        yield rows.line_num, row


JSON_REPORT_DEPTH = 500


def load_json(path: Path) -> Any:
    """The file's JSON document; :class:`JsonFileError` with the line when it is not JSON or
    nests deeper than Python's parser can follow (a RecursionError, not a traceback)."""
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise JsonFileError(f"{path}:{exc.lineno}", f"not valid JSON: {exc.msg}") from None
    except RecursionError:
        line = _line_past_depth(text, JSON_REPORT_DEPTH)
        raise JsonFileError(
            f"{path}:{line}", f"JSON nested too deeply (more than {JSON_REPORT_DEPTH} levels here)"
        ) from None


class JsonFileError(RecordError):
    """A JSON file that cannot be parsed: ``where`` is ``file:line``."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(reason)
        self.where = where
        self.reason = reason


def _line_past_depth(text: str, limit: int) -> int:
    """The line on which ``[``/``{`` nesting (outside strings) first passes ``limit``."""
    depth, line, in_string, escaped = 0, 1, False, False
    for ch in text:
        if ch == "\n":
            line += 1
        elif in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return line
        elif ch in "]}":
            depth -= 1
    return 1
