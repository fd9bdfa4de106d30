"""The shapes of the read side: filters in, a JSON-ready result out.

Filters arrive as a plain dict (from Python, the CLI or the request channel) and
are validated here; their values only ever reach SQL as bound parameters.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from contracts.errors import TradescribeError
from contracts.events import EventId, Mode, SignalStatus, TradeStatus

Name = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]


class QueryError(TradescribeError):
    """A query could not run: unknown name, bad filter, missing database, timeout."""


class DeadLetteredError(QueryError):
    """The awaited event was dead-lettered: it will never be committed."""

    def __init__(self, event_id: str, reason: str) -> None:
        super().__init__(f"event {event_id} was dead-lettered, never stored: {reason}")
        self.event_id = event_id
        self.reason = reason


FIRST_DAY = dt.date(1900, 1, 1)
LAST_DAY = dt.date(9998, 12, 31)


class Filters(BaseModel):
    """Every filter any query takes; each query accepts its own subset (``QuerySpec``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # tenancy: every query takes these
    account: Name | None = None
    source: Name | None = None
    plugin_id: Name | None = None
    mode: Mode | None = None
    # a reader's scope (set by the HTTP server from its token, never by a query's
    # caller: no QuerySpec lists them): only these accounts / sources, when set
    scope_accounts: tuple[str, ...] | None = None
    scope_sources: tuple[str, ...] | None = None
    # read your own writes: wait until this event is committed before answering
    wait_for: EventId | None = None
    wait_timeout_s: float = Field(5.0, gt=0, le=60)
    # time
    tz: str = Field("UTC", description="IANA time zone that defines 'today', weeks and days.")
    since: dt.date | None = Field(None, description="First local day, inclusive.")
    until: dt.date | None = Field(None, description="Last local day, inclusive.")
    date: dt.date | None = Field(None, description="One local day (default today).")
    # what
    symbol: Name | None = Field(None, description="Symbol substring (case-insensitive).")
    status: TradeStatus | SignalStatus | None = None
    side: Literal["buy", "sell"] | None = None
    strategy: Name | None = None
    kind: Literal["trades", "signals"] = "trades"
    trade_id: Name | None = None
    # paging
    limit: int = Field(100, ge=1, le=10_000)
    offset: int = Field(0, ge=0, le=10_000_000)

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name like UTC or Europe/Berlin"
            ) from None
        return value

    @field_validator("since", "until", "date")
    @classmethod
    def _plausible_day(cls, value: dt.date | None) -> dt.date | None:
        # Far enough from date.min/max that a day after, a year before and any time
        # zone's offset stay representable (9999-12-31 + 1 day overflowed).
        if value is not None and not FIRST_DAY <= value <= LAST_DAY:
            raise ValueError(f"must be a day from {FIRST_DAY} to {LAST_DAY}")
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)


COMMON_FILTERS = ("account", "source", "plugin_id", "mode", "wait_for", "wait_timeout_s")


@dataclass
class QueryResult:
    """What every query returns; ``as_dict()`` is plain JSON."""

    name: str
    columns: list[str]
    rows: list[dict[str, Any]]
    summary: dict[str, Any] | None = None
    sections: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "columns": self.columns,
            "rows": self.rows,
            "summary": self.summary,
            "sections": self.sections,
        }


# --- time: local days as UTC text ranges -------------------------------------


def utc_text(moment: dt.datetime) -> str:
    """The projections' fixed-width UTC text, so comparisons are string comparisons."""
    utc = moment.astimezone(dt.UTC)
    if utc.year < 1000:  # strftime's %Y and isoformat pad such years differently
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # the same text as strftime("%Y-%m-%dT%H:%M:%S.%fZ"), in a third of the time (a
    # calendar makes one per day)
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def day_start(day: dt.date, zone: ZoneInfo) -> str:
    """Local midnight of ``day`` in ``zone``, as UTC text."""
    return utc_text(dt.datetime.combine(day, dt.time(), tzinfo=zone))


def day_starts(first: dt.date, days: int, zone: ZoneInfo) -> list[str]:
    """``day_start`` of ``first`` and of each of the ``days - 1`` days after it."""
    ordinal = first.toordinal()
    midnight = dt.time()
    return [utc_text(dt.datetime.combine(dt.date.fromordinal(ordinal + i), midnight, tzinfo=zone))
            for i in range(days)]  # fmt: skip


def day_range(first: dt.date, last: dt.date, zone: ZoneInfo) -> tuple[str, str]:
    """[start of ``first``, start of the day after ``last``) as UTC text."""
    return day_start(first, zone), day_start(last + dt.timedelta(days=1), zone)


def local_today(zone: ZoneInfo, now: dt.datetime | None = None) -> dt.date:
    return (now or dt.datetime.now(dt.UTC)).astimezone(zone).date()
