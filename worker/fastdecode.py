"""The hot path's decoder: msgspec proves the common, valid event, pydantic decides the rest.

:func:`contracts.events.parse_event` (pydantic) is the contract and the authority on what
is refused and why. This module is a second decoder for the worker's hot path only: it
takes an entry when it can prove that pydantic would accept it and that the rows
stored from it are those pydantic's event would give, and otherwise returns ``None`` so
that the caller asks pydantic (which accepts it after all, or gives the reason it is a
dead letter). It never refuses anything itself.

What it proves, and so takes: trade, signal, position and daily-stats events whose
``data`` has only the contract's named fields (no ``attributes``, no unknown ones), with
decimals as plain JSON strings (``-?digits[.digits]``, 30 digits at most each side),
times as RFC 3339 text (``YYYY-MM-DDTHH:MM:SS[.ffffff]`` then ``Z`` or ``±HH:MM``), dates
as ``YYYY-MM-DD``, text without NUL and without whitespace at its ends, sides and
statuses exactly as the contract spells them, JSON integers and booleans. Anything else
(journal and audit events, numbers for decimals, ``"long"`` for a side, extra fields,
NaN, ...) goes to pydantic, as every entry did before.

The Structs are built from the pydantic models' own annotations (:func:`_kind`), so
there is one schema; ``tests/test_fastdecode.py`` proves with hypothesis, on valid and
hostile input, that both decoders accept and refuse alike and plan the same rows.
"""

from __future__ import annotations

import datetime as dt
import functools
import operator
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from annotated_types import Ge, Gt, Le, Lt
from pydantic.fields import FieldInfo

from contracts import events as ev
from contracts.vocabulary import TENANCY
from worker.store.entities import DAILY_STATS, POSITIONS, SIGNALS, TRADES, Entity
from worker.store.projections import FastEvent, utc_text
from worker.store.rows import json_value

_UNSET = msgspec.UNSET
_to_builtins = msgspec.to_builtins
_COLUMN, _KEY, _ATTRIBUTE = "column", "key", "attribute"  # where a payload field goes
# Python's re matches $ before a final newline; \Z is the end, as pydantic's (Rust) $ is.
_ID = ev._ID_PATTERN[:-1] + r"\Z"
_SOURCE = r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,63}\Z"
_MOMENT = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})\Z"
)
_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z"

IdText = Annotated[str, msgspec.Meta(pattern=_ID)]
SourceText = Annotated[str, msgspec.Meta(pattern=_SOURCE)]
MomentText = Annotated[str, msgspec.Meta(pattern=_MOMENT)]


class _NotProven(Exception):
    """The value may be refused by pydantic, or read differently: ask pydantic."""


def _text_checker(max_length: int, short: bool) -> Callable[[str], str]:
    def check(value: str) -> str:
        # Short strips whitespace first: take only what stripping leaves alone
        if "\x00" in value or (short and (value[:1].isspace() or value[-1:].isspace())):
            raise _NotProven
        return value

    return check


def _moment(value: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(value)
        if moment.year in (1, 9999):
            moment.astimezone(dt.UTC)  # no UTC equivalent: pydantic refuses it
    except (ValueError, OverflowError):
        raise _NotProven from None
    return moment


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise _NotProven from None


def _bounds(info: FieldInfo | None) -> list[Callable[[Any], bool]]:
    """The Gt/Ge/Lt/Le of a field, as predicates."""
    tests: list[Callable[[Any], bool]] = []
    for m in info.metadata if info is not None else ():
        if isinstance(m, Gt):
            tests.append(functools.partial(operator.lt, m.gt))  # gt < v
        elif isinstance(m, Ge):
            tests.append(functools.partial(operator.le, m.ge))
        elif isinstance(m, Lt):
            tests.append(functools.partial(operator.gt, m.lt))  # lt > v
        elif isinstance(m, Le):
            tests.append(functools.partial(operator.ge, m.le))
    return tests


def _number_checker(kind: type, tests: list[Callable[[Any], bool]]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        try:
            if kind is Decimal:
                number = Decimal(value)  # exact; then only its plain spelling is taken
                if not number.is_finite() or format(number, "f") != value:
                    raise _NotProven  # "1e5", " 1", "1_0", ".5", "007", "NaN": pydantic's
                if number and number.adjusted() < ev._TINY:
                    raise _NotProven
            else:
                number = value
            for test in tests:
                if not test(number):
                    raise _NotProven
        except (ArithmeticError, ValueError):
            raise _NotProven from None
        return number

    return check


# How _split handles a field's value: the common kinds inline, the others by a check.
_AS_IS, _SHORT, _TEXT, _DECIMAL, _CHECKED = range(5)
# a plain decimal: no exponent, sign or leading zero; at most 30 digits each side, so it
# is below 10**30 and either 0 or at least 10**-30 in size: the contract's bounds hold
_PLAIN_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]{0,29})(?:\.[0-9]{1,30})?\Z").match
_FAR = (Decimal("-1e30"), Decimal("1e30"))


@dataclass(frozen=True)
class _Field:
    """How one payload field is decoded (msgspec type) and checked (after decoding)."""

    wire: Any  # the msgspec type of a given value
    check: Callable[[Any], Any] | None  # raises _NotProven; returns the value as pydantic has it
    kind: int = _CHECKED
    least: float | None = None  # _DECIMAL: the float it must pass (> 0, or >= 0 when ``or_equal``)
    or_equal: bool = False


def _decimal_field(info: FieldInfo) -> _Field:
    """A decimal: plain ones with only the contract's usual bounds inline, others checked."""
    bounds = [m for m in info.metadata if isinstance(m, Gt | Ge | Lt | Le)]
    least: float | None = None
    or_equal = False
    usual = True
    for m in bounds:
        value = next(getattr(m, a) for a in ("gt", "ge", "lt", "le") if hasattr(m, a))
        if value in _FAR:
            continue
        if value == 0 and isinstance(m, Gt | Ge):
            least, or_equal = 0.0, isinstance(m, Ge)
        else:
            usual = False  # e.g. confidence <= 100: compared as a Decimal
    check = _number_checker(Decimal, _bounds(info))
    if not usual:
        return _Field(str, check)
    return _Field(str, check, _DECIMAL, least, or_equal)


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed) of an ``X | None`` hint."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return inner[0], len(inner) < len(args)
    return hint, False


def _kind(hint: Any) -> _Field | None:
    """A payload field's decoding, from its pydantic annotation; None: not proven here."""
    if hint == ev.Side:
        return _Field(Literal["buy", "sell"], None, _AS_IS)
    if hint == ev.Moment:
        return _Field(MomentText, _moment)
    if hint is dt.date:
        return _Field(Annotated[str, msgspec.Meta(pattern=_DATE)], _date)
    if hint is bool:
        return _Field(bool, None, _AS_IS)
    if typing.get_origin(hint) is Literal:
        return _Field(hint, None, _AS_IS)
    if typing.get_origin(hint) is not Annotated:
        return None
    base, *meta = typing.get_args(hint)
    constraints = next((m for m in meta if hasattr(m, "strip_whitespace")), None)
    info = next((m for m in meta if isinstance(m, FieldInfo)), None)
    if base is str and constraints is not None:
        most = constraints.max_length or ev.MAX_TEXT
        least = constraints.min_length or 0
        text = Annotated[str, msgspec.Meta(min_length=least, max_length=most)]
        short = bool(constraints.strip_whitespace)
        return _Field(text, _text_checker(most, short), _SHORT if short else _TEXT)
    finite = info is not None and any(
        getattr(m, "allow_inf_nan", None) is False for m in info.metadata
    )
    if base is Decimal and finite and info is not None:
        return _decimal_field(info)
    if base is int:
        return _Field(int, _number_checker(int, _bounds(info)))
    return None


@dataclass(frozen=True)
class _Spec:
    """One event type the fast path covers."""

    type: str
    struct: Any  # a msgspec Struct class
    table: dict[str, tuple[_Field, str]]  # name: how it is checked, where it goes
    entity: Entity
    key_field: str  # trade_id, signal_id, position_id, date: the subject in the event log


_ENTITY_OF = {
    "trade": (TRADES, frozenset({"trade_id"})),
    "signal": (SIGNALS, frozenset({"signal_id"})),
    "position": (POSITIONS, frozenset({"position_id"})),
    "daily_stats": (DAILY_STATS, frozenset({"date"})),
}


def _payload_struct(model: type[ev.Payload], name: str) -> tuple[type[msgspec.Struct], list[Any]]:
    hints = typing.get_type_hints(model, include_extras=True)
    fields: list[Any] = []
    checks: list[Any] = []
    for field, info in model.model_fields.items():
        if field == "attributes":
            continue  # not declared: given, it makes the entry pydantic's
        inner, nullable = _unwrap(hints[field])
        kind = _kind(inner)
        if kind is None:
            continue  # not declared: an unknown field, so pydantic's
        if info.is_required():
            fields.append((field, kind.wire))
        else:
            wire = kind.wire | None if nullable else kind.wire
            fields.append((field, wire | msgspec.UnsetType, _UNSET))
        checks.append((field, kind))
    struct = msgspec.defstruct(
        name, fields, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
    )
    return struct, checks


def _build() -> tuple[dict[str, _Spec], Any]:
    specs: dict[str, _Spec] = {}
    events: list[Any] = []
    for type_name, cls in ev.EVENT_CLASSES.items():
        entity_of = _ENTITY_OF.get(type_name.split(".", 1)[0])
        if entity_of is None:
            continue  # journal and audit: pydantic's
        entity, skip = entity_of
        data_model = cls.model_fields["data"].annotation
        assert isinstance(data_model, type)
        assert issubclass(data_model, ev.Payload)
        struct, checks = _payload_struct(data_model, f"Fast{data_model.__name__}")
        envelope = msgspec.defstruct(
            f"Fast{cls.__name__}",
            [
                ("id", IdText),
                ("source", SourceText),
                ("ts", MomentText),
                ("data", struct),
                ("account", _SHORT_TEXT | msgspec.UnsetType, _UNSET),
                ("plugin_id", _SHORT_TEXT | msgspec.UnsetType, _UNSET),
                ("mode", ev.Mode | msgspec.UnsetType, _UNSET),
            ],
            kw_only=True,
            tag_field="type",
            tag=type_name,
        )
        table = {
            n: (c, _KEY if n in skip else _COLUMN if n in entity.column_set else _ATTRIBUTE)
            for n, c in checks
        }
        specs[type_name] = _Spec(type_name, envelope, table, entity, min(skip))
        events.append(envelope)
    return specs, msgspec.json.Decoder(typing.Union[tuple(events)])  # noqa: UP007


_SHORT_TEXT = Annotated[str, msgspec.Meta(min_length=1, max_length=ev.MAX_SHORT)]
_SHORT_CHECK = _text_checker(ev.MAX_SHORT, True)


_DEFAULT_ACCOUNT, _DEFAULT_PLUGIN, _DEFAULT_MODE = (
    ev.Envelope.model_fields[name].default for name in ("account", "plugin_id", "mode")
)


def _column(value: Any) -> Any:
    if type(value) is Decimal:
        return float(value)
    if type(value) is dt.datetime:
        return utc_text(value)
    if type(value) is dt.date:
        return value.isoformat()
    if type(value) is bool:
        return int(value)
    return value


def _decimal(field: _Field, value: str, place: str) -> Any:
    """A plain decimal with the usual bounds: a column's float, or an attribute's text."""
    if _PLAIN_DECIMAL(value) is None:
        raise _NotProven
    number = float(value)  # as float(Decimal(value)): both round correctly
    least = field.least
    if least is not None and (number < least or (number == least and not field.or_equal)):
        raise _NotProven
    return number if place is _COLUMN else str(Decimal(value))


def _split(spec: _Spec, data: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The fields given (to_builtins leaves out the unset ones), checked and split."""
    columns: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    keys: dict[str, Any] = {}
    table = spec.table
    for name, value in _to_builtins(data).items():
        field, place = table[name]
        kind = field.kind
        if value is None or kind == _AS_IS:
            pass
        elif kind <= _TEXT:  # Short strips whitespace: take only what that leaves alone
            if "\x00" in value or (
                kind == _SHORT and (value[:1].isspace() or value[-1:].isspace())
            ):
                raise _NotProven
        elif kind == _DECIMAL:
            (columns if place is _COLUMN else attributes)[name] = _decimal(field, value, place)
            continue
        else:
            value = field.check(value)  # type: ignore[misc]
        if place is _COLUMN:
            columns[name] = _column(value)
        elif place is _KEY:
            keys[name] = value
        else:
            attributes[name] = json_value(value)
    return columns, attributes, keys


def fast_decode(raw: bytes) -> FastEvent | None:
    """The event, when proven (see the module's text); None: ask pydantic."""
    try:
        wire = _DECODE(raw)
        spec = _SPEC_OF[type(wire)]
        account, plugin_id, mode = wire.account, wire.plugin_id, wire.mode
        if account is not _UNSET:
            _SHORT_CHECK(account)
        if plugin_id is not _UNSET:
            _SHORT_CHECK(plugin_id)
        columns, attributes, keys = _split(spec, wire.data)
        ts = _moment(wire.ts)
    except (msgspec.ValidationError, msgspec.DecodeError, _NotProven):
        return None
    given = _GIVEN[account is not _UNSET, plugin_id is not _UNSET, mode is not _UNSET]
    key: Any = keys.get(spec.key_field)
    if spec.entity is POSITIONS:
        symbol = keys["symbol"] = wire.data.symbol
        keys["quantity"] = Decimal(wire.data.quantity)
        subject = key or symbol
    else:  # trade_id, signal_id (required), a date
        subject = key if type(key) is str else key.isoformat()
    event_id = wire.id
    return FastEvent(
        event_id.lower() if len(event_id) == 36 else event_id.upper(),
        spec.type,
        wire.source,
        ts,
        (
            _DEFAULT_ACCOUNT if account is _UNSET else account,
            _DEFAULT_PLUGIN if plugin_id is _UNSET else plugin_id,
            _DEFAULT_MODE if mode is _UNSET else mode,
        ),
        given,
        (columns, attributes, keys),
        subject,
    )


# The tenancy fields named, by which of (account, plugin_id, mode) were given.
_GIVEN = {
    (a, p, m): frozenset(n for n, g in zip(TENANCY, (a, p, m), strict=True) if g)
    for a in (False, True)
    for p in (False, True)
    for m in (False, True)
}
_SPECS, _DECODER = _build()
_SPEC_OF = {spec.struct: spec for spec in _SPECS.values()}
_DECODE = _DECODER.decode
