"""The wire contract: one pydantic model per event type, inside one envelope.

A stream entry has one field, ``event``, whose value is the JSON of an
:data:`Event`. See ``docs/wire-format.md`` for the prose version.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeAlias, Union

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    TypeAdapter,
    model_validator,
)

from contracts.ids import new_event_id
from contracts.vocabulary import EVENT_TYPES, TENANCY

WIRE_FIELD = "event"
DEFAULT_STREAM = "tradescribe:events"
MAX_SHORT = 200
MAX_TEXT = 10_000
# The largest wire JSON a publisher sends (the worker's max_message_bytes default).
MAX_EVENT_BYTES = 65_536


_ID_PATTERN = (
    r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25})$"
)


def _canonical_id(value: str) -> str:
    """One spelling per id: a UUID in lower case, a ULID in upper case (both are
    case-insensitive), so the event log's unique index sees one event once."""
    return value.lower() if len(value) == 36 else value.upper()


EventId = Annotated[str, StringConstraints(pattern=_ID_PATTERN), AfterValidator(_canonical_id)]
SourceName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,63}$")]
# No NUL anywhere in text: SQLite's text functions and C readers stop at it, so two
# different identifiers could compare or print alike.
NO_NUL = r"^[^\x00]*$"
Short = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_SHORT, strip_whitespace=True, pattern=NO_NUL),
]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT, pattern=NO_NUL)]

# Exact decimals: JSON strings or numbers, never NaN or infinity, below 10**30 in
# magnitude, so that the projections' REAL columns never overflow, and either 0 or at
# least 10**-30 in magnitude, so that none turns into 0.0 there ("1e-999999" would).
# (Bounds on the value, not on its digits: max_digits costs a quarter of validation.)
_BOUND = Decimal("1e30")
_TINY = -30


def _representable(value: Decimal) -> Decimal:
    if value and value.adjusted() < _TINY:
        raise ValueError("is too close to 0: a non-zero number must be at least 1e-30 in size")
    return value


_Exact = AfterValidator(_representable)
Money = Annotated[Decimal, Field(gt=-_BOUND, lt=_BOUND, allow_inf_nan=False), _Exact]
Positive = Annotated[Decimal, Field(gt=0, lt=_BOUND, allow_inf_nan=False), _Exact]
NonNegative = Annotated[Decimal, Field(ge=0, lt=_BOUND, allow_inf_nan=False), _Exact]


def _rfc3339(value: Any) -> Any:
    """A time is RFC 3339 text (or a datetime), never a number: a number carries no
    offset, and the contract requires one ("1700000000" included)."""
    if type(value) is str:
        if value[4:5] == "-":  # YYYY-MM-DD first, as RFC 3339 has it
            return value
    elif isinstance(value, dt.datetime):
        return value
    raise ValueError("a time is RFC 3339 text with an offset, like 2026-11-22T10:00:00Z")


def _has_utc(moment: dt.datetime) -> dt.datetime:
    """Refused here, as one event's error, rather than later in a projection: a time
    whose conversion to UTC leaves the calendar (9999-12-31T23:59:59-01:00)."""
    if moment.year in (1, 9999):
        try:
            moment.astimezone(dt.UTC)
        except OverflowError:
            raise ValueError("is out of range: it has no UTC equivalent") from None
    return moment


Moment = Annotated[AwareDatetime, BeforeValidator(_rfc3339), AfterValidator(_has_utc)]


def _finite(value: Any) -> None:
    """Raise if a JSON value holds NaN or an infinity (JSON has neither: they would
    make the log's JSON and every reply built from it invalid)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"holds {value}: numbers must be finite")
    elif isinstance(value, dict):
        for item in value.values():
            _finite(item)
    elif isinstance(value, list):
        for item in value:
            _finite(item)


Count = Annotated[int, Field(ge=0, le=2**53)]

_SIDE_ALIASES = {"buy": "buy", "long": "buy", "sell": "sell", "short": "sell"}


def _normalise_side(value: Any) -> Any:
    if isinstance(value, str):
        return _SIDE_ALIASES.get(value.strip().lower(), value)
    return value


Side = Annotated[Literal["buy", "sell"], BeforeValidator(_normalise_side)]
Mode = Literal["live", "paper", "backtest"]
TradeStatus = Literal["pending", "open", "partial", "closed", "cancelled", "expired"]
SignalStatus = Literal["active", "triggered", "closed", "expired", "cancelled"]


class Payload(BaseModel):
    """Base of every ``data`` object: unknown fields are kept, not dropped."""

    model_config = ConfigDict(extra="allow", frozen=True, str_max_length=MAX_TEXT)

    attributes: dict[str, JsonValue] | None = Field(
        default=None, description="Free-form fields a particular bot sends; kept as JSON."
    )

    @model_validator(mode="after")
    def _json_is_finite(self) -> Payload:
        extra = self.model_extra
        if self.attributes or extra:
            _finite(self.attributes)
            _finite(extra)
        return self

    def extras(self) -> dict[str, Any]:
        """Fields sent that the model does not name, merged with ``attributes``."""
        merged: dict[str, Any] = dict(self.attributes or {})
        merged.update(self.model_extra or {})
        return merged


class TradeFields(Payload):
    """Every field a trade event may carry. Core names first, then the seeds' own."""

    symbol: Short | None = None
    side: Side | None = None
    quantity: Positive | None = None
    entry_price: Positive | None = None
    stop_loss: Positive | None = None
    take_profit: Positive | None = None
    exit_price: Positive | None = None
    current_price: Positive | None = None
    realized_pnl: Money | None = None
    unrealized_pnl: Money | None = None
    fees: Money | None = None
    exit_reason: Short | None = None
    strategy: Short | None = None
    notes: Text | None = None
    status: TradeStatus | None = None
    opened_at: Moment | None = None
    closed_at: Moment | None = None
    # broker and order identity (seeds 000, 002, 004)
    order_id: Short | None = None
    exchange: Short | None = None
    instrument_token: Short | None = None
    position_id: Short | None = None
    # sizing and risk (seeds 001, 004)
    lot_size: Positive | None = None
    risk_reward_ratio: Money | None = None
    atr_at_entry: NonNegative | None = None
    commission: Money | None = None
    swap: Money | None = None
    trade_type: Short | None = None
    # re-entry and profit chains (seed 004)
    chain_id: Short | None = None
    chain_level: Count | None = None
    is_re_entry: bool | None = None
    session_id: Short | None = None
    logic_type: Short | None = None
    # options (seed 000)
    option_symbol: Short | None = None
    option_type: Literal["call", "put"] | None = None
    strike_price: Positive | None = None
    expiration_date: dt.date | None = None
    contracts: Annotated[int, Field(gt=0, le=10**9)] | None = None
    premium: Money | None = None


class TradeOpened(TradeFields):
    trade_id: Short
    symbol: Short
    side: Side
    quantity: Positive
    entry_price: Positive


class TradeUpdated(TradeFields):
    trade_id: Short


class TradeClosed(TradeFields):
    trade_id: Short
    exit_price: Positive


class SignalFields(Payload):
    symbol: Short | None = None
    side: Side | None = None
    entry_price: Positive | None = None
    stop_loss: Positive | None = None
    take_profit: Positive | None = None
    current_price: Positive | None = None
    exit_price: Positive | None = None
    realized_pnl: Money | None = None
    unrealized_pnl: Money | None = None
    confidence: Annotated[Decimal, Field(ge=0, le=100, allow_inf_nan=False)] | None = None
    timeframe: Short | None = None
    strategy: Short | None = None
    exit_reason: Short | None = None
    notes: Text | None = None
    status: SignalStatus | None = None
    emitted_at: Moment | None = None
    closed_at: Moment | None = None


class SignalEmitted(SignalFields):
    signal_id: Short
    symbol: Short
    side: Side


class SignalUpdated(SignalFields):
    signal_id: Short


class SignalClosed(SignalFields):
    signal_id: Short


class PositionUpdated(Payload):
    """A snapshot of one position; ``quantity`` 0 means flat (inactive)."""

    symbol: Short
    position_id: Short | None = Field(
        default=None, description="Key of the position; defaults to the symbol."
    )
    quantity: Money
    entry_price: Positive | None = None
    current_price: Positive | None = None
    unrealized_pnl: Money | None = None
    realized_pnl: Money | None = None
    lot_size: Positive | None = None
    exchange: Short | None = None
    instrument_token: Short | None = None
    is_active: bool | None = None


class DailyStatsUpdated(Payload):
    """The day's running numbers (seed 002's daily_stats, seed 003's balance)."""

    date: dt.date
    total_realized_pnl: Money | None = None
    total_unrealized_pnl: Money | None = None
    protected_profit: Money | None = None
    number_of_trades: Count | None = None
    daily_loss_used: NonNegative | None = None
    daily_loss_limit: NonNegative | None = None
    loss_limit_hit: bool | None = None
    trading_blocked: bool | None = None
    trailing_sl_active: bool | None = None
    trailing_sl_level: Money | None = None
    paper_balance: Money | None = None
    signals_today: Count | None = None


class JournalEntry(Payload):
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT, pattern=NO_NUL)]
    title: Short | None = None
    trade_id: Short | None = None
    signal_id: Short | None = None
    category: Short | None = None
    tags: Annotated[list[Short], Field(max_length=50)] | None = None
    at: Moment | None = None


class AuditEvent(Payload):
    action: Short
    user: Short | None = None
    component: Short | None = None
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] | None = None
    details: JsonValue = None

    @model_validator(mode="after")
    def _details_are_finite(self) -> AuditEvent:
        _finite(self.details)
        return self

    ip_address: Short | None = None


class Envelope(BaseModel):
    """Fields every event carries. Tenancy lives here, beside ``source``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: EventId = Field(description="Unique, time-ordered (UUIDv7 or ULID), made by the producer.")
    source: SourceName
    ts: Moment = Field(description="When it happened, RFC 3339 with an offset.")
    account: Short = Field(default="default", description="The broker account (broker_id).")
    plugin_id: Short = Field(default="legacy", description="Strategy or plugin (seed 004).")
    mode: Mode = "live"


class TradeOpenedEvent(Envelope):
    type: Literal["trade.opened"] = "trade.opened"
    data: TradeOpened


class TradeUpdatedEvent(Envelope):
    type: Literal["trade.updated"] = "trade.updated"
    data: TradeUpdated


class TradeClosedEvent(Envelope):
    type: Literal["trade.closed"] = "trade.closed"
    data: TradeClosed


class SignalEmittedEvent(Envelope):
    type: Literal["signal.emitted"] = "signal.emitted"
    data: SignalEmitted


class SignalUpdatedEvent(Envelope):
    type: Literal["signal.updated"] = "signal.updated"
    data: SignalUpdated


class SignalClosedEvent(Envelope):
    type: Literal["signal.closed"] = "signal.closed"
    data: SignalClosed


class PositionUpdatedEvent(Envelope):
    type: Literal["position.updated"] = "position.updated"
    data: PositionUpdated


class DailyStatsUpdatedEvent(Envelope):
    type: Literal["daily_stats.updated"] = "daily_stats.updated"
    data: DailyStatsUpdated


class JournalEntryEvent(Envelope):
    type: Literal["journal.entry"] = "journal.entry"
    data: JournalEntry


class AuditEventEvent(Envelope):
    type: Literal["audit.event"] = "audit.event"
    data: AuditEvent


AnyEvent: TypeAlias = Union[  # noqa: UP007 - a discriminated union needs the Union form
    TradeOpenedEvent,
    TradeUpdatedEvent,
    TradeClosedEvent,
    SignalEmittedEvent,
    SignalUpdatedEvent,
    SignalClosedEvent,
    PositionUpdatedEvent,
    DailyStatsUpdatedEvent,
    JournalEntryEvent,
    AuditEventEvent,
]
Event = Annotated[AnyEvent, Field(discriminator="type")]
EVENT_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(Event)
EVENT_CLASSES: dict[str, type[Envelope]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        TradeOpenedEvent,
        TradeUpdatedEvent,
        TradeClosedEvent,
        SignalEmittedEvent,
        SignalUpdatedEvent,
        SignalClosedEvent,
        PositionUpdatedEvent,
        DailyStatsUpdatedEvent,
        JournalEntryEvent,
        AuditEventEvent,
    )
}


if tuple(EVENT_CLASSES) != EVENT_TYPES:  # one list of types: contracts.vocabulary
    raise AssertionError(f"event classes {tuple(EVENT_CLASSES)} != EVENT_TYPES {EVENT_TYPES}")


def parse_event(raw: bytes | str) -> AnyEvent:
    """Decode and validate one wire value; raises ``pydantic.ValidationError``."""
    return EVENT_ADAPTER.validate_json(raw)


def build_event(event_type: str, data: dict[str, Any] | Payload, **envelope: Any) -> AnyEvent:
    """Build and validate an event from its type name, its data and envelope fields."""
    payload = data.model_dump(exclude_unset=True) if isinstance(data, Payload) else data
    return validate_envelope(event_type, payload, envelope)


def validate_envelope(event_type: str, payload: Any, envelope: dict[str, Any]) -> AnyEvent:
    """``build_event`` on an envelope dict of the caller's own, which it fills in (a
    new id and the time when absent) and validates as the event, without copying."""
    if "id" not in envelope:
        envelope["id"] = new_event_id()
    if "ts" not in envelope:
        envelope["ts"] = dt.datetime.now(dt.UTC)
    envelope["type"] = event_type
    envelope["data"] = payload
    return EVENT_ADAPTER.validate_python(envelope)


def to_wire(event: AnyEvent) -> str:
    """The JSON that goes into the stream entry's ``event`` field (decimals as strings).

    Tenancy the sender did not set is left out, so that the receiver knows it was
    not said (a ``trade.closed`` must not reset the plugin of its ``trade.opened``).
    """
    unset = {k for k in TENANCY if k not in event.model_fields_set}
    return event.model_dump_json(exclude_none=True, exclude=unset)
