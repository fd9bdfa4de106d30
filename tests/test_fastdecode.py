"""The hot path's msgspec decoder against pydantic, the contract.

For any input: when the fast decoder takes an entry, pydantic accepts it too and the
rows planned from both events are the same (event log, entity changes, appends); when it
does not, the worker asks pydantic, which accepts it or gives the dead letter's reason.
So both decoders accept and refuse alike and store the same rows. Hypothesis drives
valid and hostile values: NaN and infinities, huge and tiny decimals, year 9999 with
offsets, NUL, whitespace at the ends, wrong types, extra fields, non-canonical ids.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import typing
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bench.workload import wire_events
from contracts import events as ev
from worker.entries import decode
from worker.fastdecode import _SPECS, fast_decode
from worker.store.batch import Decoded, plan_batch
from worker.store.projections import FastEvent

COVERED = sorted(_SPECS)
TYPES = [*COVERED, "journal.entry", "audit.event", "trade.nope"]

WHITESPACE = " \t\n\r\x0b\x0c\x1c\x1d\x85\xa0\u1680\u2000\u2028\u202f\u3000"
texts = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.sampled_from("ab-_." + WHITESPACE + "\x00é"), max_size=8),
    st.sampled_from(["", " x", "x ", "\x00", "a\x00b", "x" * 200, "x" * 201, "x" * 10_001]),
)
decimal_texts = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.from_regex(r"-?[0-9]{1,32}(\.[0-9]{1,32})?", fullmatch=True),
    st.sampled_from([
        "1e5", " 1", "1 ", "1_0", ".5", "5.", "007", "-0", "0", "0.0", "+1", "1e-31",
        "1e30", "9" * 30, "9" * 31, "-" + "9" * 30, "0." + "0" * 29 + "1",
        "0." + "0" * 30 + "1", "NaN", "-Infinity", "inf", "\u0663", "100", "100.0000001",
        "99.999", "1E+2", "0x10", "",
    ]),
)  # fmt: skip
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 5.0, 2**53, 2**53 + 1, 10**9, 10**9 + 1, -1, True, False]),
)


def _offset(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    h, m = divmod(abs(minutes), 60)
    return f"{sign}{h:02d}:{m:02d}"


moments = st.one_of(
    st.builds(
        lambda d, off, frac: d.strftime("%Y-%m-%dT%H:%M:%S") + frac + off,
        st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59)),
        st.one_of(st.just("Z"), st.integers(-1500, 1500).map(_offset)),
        st.sampled_from(["", ".1", ".123456", ".1234567", ",5"]),
    ),
    st.sampled_from([
        "9999-12-31T23:59:59-01:00", "9999-12-31T23:59:59+01:00", "0001-01-01T00:00:00+01:00",
        "0001-01-01T00:30:00-01:00", "2026-01-01 00:00:00Z", "2026-01-01T00:00:00+0100",
        "2026-01-01T24:00:00Z", "2026-02-30T00:00:00Z", "2026-01-01T00:00:60Z",
        "2026-01-01T00:00:00z", "2026-01-01t00:00:00Z", "2026-01-01T00:00:00+23:59",
        "2026-01-01T00:00:00+24:00", "2026-01-01T00:00:00", "1700000000", "2026-01-01",
        "2026-01-01T00:00Z", "20260101T000000Z", "2026-01-01T00:00:00+01:00:30",
        "2026-01-01T00:00:00.000000Z\n", "0000-01-01T00:00:00Z",
    ]),
)  # fmt: skip
dates = st.one_of(
    st.dates().map(dt.date.isoformat),
    st.sampled_from(["2026-12-04", "2026-13-01", "20261204", "0000-01-01", "9999-12-31",
                     "2026-02-29", "2026-12-04T00:00:00", "2026-W49-5", " 2026-12-04"]),
)  # fmt: skip
ULID = "01HZY3K5N8X9Q2W4E6R7T8Y9ZA"
UUID = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
ids = st.one_of(
    st.sampled_from([ULID, ULID.lower(), UUID, UUID.upper(), ULID + "\n", "8" + ULID[1:],
                     ULID[:-1] + "I", ULID[:-1] + "L", ULID[:-1], UUID[:-1] + "g", "x"]),
    st.uuids().map(str).map(lambda u: u.upper() if len(u) % 2 else u),
    st.text(alphabet="0123456789ABCDEFGHJKMNPQRSTVWXYZabcdefghjkmnpqrstvwxyz", min_size=26,
            max_size=26).map(lambda s: "0" + s[1:]),
)  # fmt: skip
valid_ids = st.one_of(
    st.sampled_from([ULID, ULID.lower(), UUID, UUID.upper(), "7" + ULID[1:]]),
    st.uuids().map(str).map(lambda u: u.upper() if u[0] in "0123456" else u),
)
sides = st.sampled_from(["buy", "sell", "BUY", " buy", "long", "short", "Sell", ""])
json_values = st.recursive(
    st.none() | st.booleans() | numbers | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)


def _literals(hint: Any) -> list[str]:
    inner = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(inner) == 1 and typing.get_origin(inner[0]) is typing.Literal:
        return list(typing.get_args(inner[0]))
    return [a for a in inner if isinstance(a, str)]


names = st.text(alphabet="abcXYZ019-_.:é ", min_size=1, max_size=20).filter(
    lambda t: t == t.strip()
)
plain_moments = st.builds(
    lambda d, off, frac: d.strftime("%Y-%m-%dT%H:%M:%S") + frac + off,
    st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2100, 1, 1)),
    st.one_of(st.just("Z"), st.integers(-14 * 60, 14 * 60).map(_offset)),
    st.sampled_from(["", ".5", ".123456"]),
)


def _kinds(hint: Any) -> tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]:
    """(likely valid, hostile) values for a field, by its annotation."""
    text = repr(hint)
    if "_normalise_side" in text:
        return st.sampled_from(["buy", "sell"]), sides
    if "AwareDatetime" in text:
        return plain_moments, moments
    if "Decimal" in text:
        top = 100 if "le=100" in text else 10**6
        valid = st.decimals(min_value="0.0001", max_value=top, places=4).map(lambda d: f"{d:f}")
        return valid, decimal_texts
    if "datetime.date" in text:
        return st.dates(dt.date(1971, 1, 1), dt.date(2100, 1, 1)).map(str), dates
    literals = _literals(hint)
    if literals:
        hostile = [*(v.upper() for v in literals), " " + literals[0], "other"]
        return st.sampled_from(literals), st.sampled_from(hostile)
    if "<class 'bool'>" in text:
        return st.booleans(), st.sampled_from([1, 0, "true", "yes", None])
    if "<class 'int'>" in text:
        return st.integers(1, 10**6), numbers
    return names, texts


def _data(event_type: str, hostile: float = 0.3) -> st.SearchStrategy[dict[str, Any]]:
    cls = ev.EVENT_CLASSES.get(event_type, ev.TradeUpdatedEvent)
    model = cls.model_fields["data"].annotation
    assert isinstance(model, type)
    hints = typing.get_type_hints(model, include_extras=True)
    rate = int(hostile * 100)

    def field(valid: Any, bad: Any) -> Any:
        return st.integers(0, 99).flatmap(
            lambda i: bad if i < rate else st.none() if i < rate + 3 else valid
        )

    fields = {
        name: field(*_kinds(hints[name]))
        if name != "attributes"
        else st.one_of(st.none(), st.dictionaries(names, json_values, max_size=2))
        for name in model.model_fields
    }
    required = [n for n, f in model.model_fields.items() if f.is_required()]
    optional = st.lists(st.sampled_from(sorted(set(fields) - set(required))), max_size=6)
    extras = st.dictionaries(texts, json_values, max_size=2)
    return st.tuples(
        st.fixed_dictionaries({n: fields[n] for n in required}),
        optional.flatmap(lambda ns: st.fixed_dictionaries({n: fields[n] for n in ns})),
        st.integers(0, 99).flatmap(lambda i: extras if i < rate else st.just({})),
    ).map(lambda parts: {**parts[0], **parts[1], **parts[2]})


@st.composite
def wire(draw: st.DrawFn) -> bytes:
    """An event: valid in about half the examples, with hostile values in the others."""
    hostile = draw(st.sampled_from([0.0, 0.0, 0.03, 0.1, 0.5]))
    bad = draw(st.integers(0, 99)) < hostile * 100
    event_type = draw(st.sampled_from(TYPES if bad else COVERED))
    sources = ["bot-1", "a:b@c/d", "-x", "b" * 65, "b\n"]
    event: dict[str, Any] = {
        "id": draw(ids if bad else valid_ids),
        "type": event_type,
        "source": draw(st.one_of(st.sampled_from(sources), texts) if bad else names.map(
            lambda t: "b" + "".join(c for c in t if c.isalnum() and c.isascii())
        )),
        "ts": draw(st.one_of(moments, json_values) if bad else plain_moments),
        "data": draw(st.one_of(_data(event_type, hostile), json_values) if bad
                     else _data(event_type, hostile)),
    }  # fmt: skip
    modes = st.sampled_from(["live", "paper", "backtest", "LIVE", None])
    for name, values in (("account", names), ("plugin_id", names), ("mode", modes)):
        if draw(st.booleans()):
            event[name] = draw(st.one_of(values, texts) if bad else values)
    if draw(st.integers(0, 9)) == 0:
        event["extra"] = draw(json_values)  # the envelope ignores unknown fields
    raw = json.dumps(event, allow_nan=True, ensure_ascii=draw(st.booleans()))
    if draw(st.integers(0, 9)) == 0:  # a duplicate key: the last one counts, for both
        raw = raw[:-1] + f',"source":{json.dumps(draw(texts))}}}'
    return raw.encode("utf-8", errors="surrogatepass")


def _plain(value: Any) -> Any:
    """Rows compared exactly: floats by their repr (so -0.0 is not 0.0), dicts by items."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _planned(event: Any, body: str) -> Any:
    planned = plan_batch([Decoded("1-0", body, event)], [], "2026-01-01T00:00:00.000000Z")
    return _plain([planned.events, [tuple(c) for c in planned.changes], planned.appends])


def _pydantic(raw: bytes) -> Any:
    try:
        return ev.parse_event(raw)
    except ValidationError:
        return None


def check_same(raw: bytes) -> bool:
    """Whether the fast path took it; fails if it took what pydantic reads otherwise."""
    fast = fast_decode(raw)
    slow = _pydantic(raw)
    if fast is None:
        return False
    assert slow is not None, f"the fast path took what pydantic refuses: {raw!r}"
    body = raw.decode()
    assert _planned(fast, body) == _planned(slow, body), raw
    return True


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wire())
def test_fast_decoder_takes_only_what_pydantic_reads_the_same(raw: bytes) -> None:
    check_same(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(COVERED), st.data())
def test_valid_events_of_every_covered_type_give_the_same_rows(event_type: str, data: Any) -> None:
    """Mostly valid events (the fields' own values), so the fast path is taken often."""
    built = data.draw(_data(event_type, hostile=0.0))
    event = {"id": data.draw(valid_ids), "type": event_type, "source": "bot-1",
             "ts": data.draw(plain_moments), "data": built}  # fmt: skip
    check_same(json.dumps(event).encode())


def test_the_drain_mix_takes_the_fast_path_except_journal_entries() -> None:
    bodies = list(wire_events(2000))
    taken = sum(check_same(b.encode()) for b in bodies)
    journal = sum('"journal.entry"' in b for b in bodies)
    assert taken == len(bodies) - journal
    assert journal < len(bodies) * 0.05


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id":"01HZY3K5N8X9Q2W4E6R7T8Y9ZA","type":"trade.updated","source":"b",'
        b'"ts":"9999-12-31T23:59:59-01:00","data":{"trade_id":"t"}}',
        b'{"id":"01HZY3K5N8X9Q2W4E6R7T8Y9ZA","type":"trade.updated","source":"b",'
        b'"ts":"2026-01-01T00:00:00Z","data":{"trade_id":"t","fees":NaN}}',
        b'{"id":"01HZY3K5N8X9Q2W4E6R7T8Y9ZA","type":"trade.updated","source":"b",'
        b'"ts":"2026-01-01T00:00:00Z","data":{"trade_id":"t","fees":"1e-31"}}',
        b'{"id":"01HZY3K5N8X9Q2W4E6R7T8Y9ZA","type":"trade.updated","source":"b",'
        b'"ts":"2026-01-01T00:00:00Z","data":{"trade_id":"t\\u0000"}}',
        b'{"id":"01HZY3K5N8X9Q2W4E6R7T8Y9ZA\\n","type":"trade.updated","source":"b",'
        b'"ts":"2026-01-01T00:00:00Z","data":{"trade_id":"t"}}',
    ],
)
def test_hostile_entries_are_dead_letters_with_pydantics_reason(raw: bytes) -> None:
    assert fast_decode(raw) is None
    good, dead, _ = decode([("1-0", {b"event": raw})], {}, 65536)
    assert not good
    with pytest.raises(ValidationError) as refused:
        ev.parse_event(raw)
    assert dead[0].reason.startswith("invalid event: ")
    assert refused.value.errors()[0]["loc"][-1] in dead[0].reason


def test_a_non_canonical_id_is_stored_canonical_by_both() -> None:
    raw = (
        b'{"id":"01hzy3k5n8x9q2w4e6r7t8y9za","type":"trade.opened","source":"b",'
        b'"ts":"2026-01-01T01:00:00+01:00","data":{"trade_id":"t","symbol":"X",'
        b'"side":"buy","quantity":"1","entry_price":"2.50"}}'
    )
    fast = fast_decode(raw)
    assert isinstance(fast, FastEvent)
    assert fast.id == "01HZY3K5N8X9Q2W4E6R7T8Y9ZA" == ev.parse_event(raw).id
    assert check_same(raw)
    assert math.isclose(fast.columns["entry_price"], 2.5)
