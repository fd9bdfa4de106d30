"""Bad input never stops the worker: hypothesis throws garbage at a running worker
(raw XADDs, past the Publisher's validation); every bad entry ends in dead_letters with a
reason and every valid event around it is stored."""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from contracts.events import WIRE_FIELD
from contracts.vocabulary import EVENT_TYPES
from tests.helpers import (
    count,
    make_settings,
    pending,
    query,
    running_worker,
    wait_for,
    wire_events,
)
from worker.settings import Settings

MAX_BYTES = 20_000
VALID = json.loads(wire_events("valid", 1)[0])
FIELDS = ["id", "source", "ts", "type", "account", "mode", "data"]
DATA_FIELDS = ["trade_id", "symbol", "side", "quantity", "entry_price", "notes"]


def _with(path: list[str], value: Any) -> dict[str, Any]:
    event = json.loads(json.dumps(VALID))
    target = event if len(path) == 1 else event["data"]
    target[path[-1]] = value
    return event


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


wrong_type = st.one_of(
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers())
)
letters = st.text(alphabet=string.ascii_letters + " ", min_size=1, max_size=30)
bad_bodies: st.SearchStrategy[bytes] = st.one_of(
    st.binary(max_size=300),  # arbitrary bytes
    st.builds(lambda f, v: json.dumps(_with([f], v)).encode(), st.sampled_from(FIELDS), wrong_type),
    st.builds(
        lambda f, v: json.dumps(_with(["data", f], v)).encode(),
        st.sampled_from(DATA_FIELDS),
        wrong_type,
    ),
    st.builds(  # huge strings: over the model's limits, or over max_message_bytes
        lambda f, n: json.dumps(_with(["data", f], "x" * n)).encode(),
        st.sampled_from(["symbol", "trade_id", "notes"]),
        st.integers(10_001, 60_000),
    ),
    st.builds(  # deep JSON, as the whole body or as a value
        lambda d, whole: (
            _deep(d)
            if whole
            else json.dumps(_with(["data", "quantity"], 0)).replace(
                '"quantity": 0', f'"quantity": {_deep(d)}'
            )
        ).encode(),
        st.integers(300, 5000),
        st.booleans(),
    ),
    st.builds(  # NaN and infinities, as JSON tokens and as strings
        lambda f, v: json.dumps(_with(["data", f], v)).encode(),
        st.sampled_from(["quantity", "entry_price"]),
        st.sampled_from([float("nan"), float("inf"), float("-inf"), "NaN", "Infinity", "-inf"]),
    ),
    st.builds(  # negative or zero quantities and prices
        lambda f, v: json.dumps(_with(["data", f], str(v))).encode(),
        st.sampled_from(["quantity", "entry_price"]),
        st.decimals(max_value=0, allow_nan=False, allow_infinity=False, places=4),
    ),
    st.builds(  # bad timestamps: no offset, or not a time at all
        lambda v: json.dumps(_with(["ts"], v)).encode(),
        st.one_of(st.datetimes().map(lambda d: d.isoformat()), letters, st.just("")),
    ),
    st.builds(  # unknown types
        lambda v: json.dumps(_with(["type"], v)).encode(),
        st.text(max_size=30).filter(lambda t: t not in EVENT_TYPES),
    ),
)


@pytest.fixture
def bad_input_settings(settings: Settings, names: dict[str, str]) -> Settings:
    return make_settings(settings.db, settings.redis_url, names, max_message_bytes=MAX_BYTES)


async def test_every_bad_input_is_dead_lettered_with_a_reason_and_the_worker_keeps_going(
    bad_input_settings: Settings, sync_redis: redis.Redis, names: dict[str, str]
) -> None:
    s = bad_input_settings
    bad_ids: list[str] = []
    good_ids: list[str] = []

    @hsettings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bad_bodies, field_name=st.sampled_from([*[WIRE_FIELD] * 9, "payload"]))
    def throw(body: bytes, field_name: str) -> None:
        bad_ids.append(sync_redis.xadd(s.stream, {field_name: body}).decode())
        valid = wire_events("valid", 1, start=len(good_ids))[0]
        sync_redis.xadd(s.stream, {WIRE_FIELD: valid})
        good_ids.append(json.loads(valid)["id"])

    async with running_worker(s) as worker:
        throw()  # the worker reads while hypothesis writes (it is blocked only between awaits)
        total = len(bad_ids) + len(good_ids)
        await wait_for(
            lambda: count(s.db, "events") + count(s.db, "dead_letters") >= total, 60, "all entries"
        )
        await wait_for(lambda: pending(sync_redis, names) == 0, 10, "nothing pending")
        assert not worker.stopping
    print(f"\nhypothesis tried {len(bad_ids)} bad inputs; {len(good_ids)} valid events around them")
    dead = query(s.db, "SELECT stream_id, reason FROM dead_letters")
    assert sorted(r[0] for r in dead) == sorted(bad_ids)
    assert all(reason.strip() for _, reason in dead)
    stored = {r[0] for r in query(s.db, "SELECT event_id FROM events")}
    assert stored == set(good_ids)
    kinds = Counter(re.sub(r"\d+", "N", " ".join(r[1].split()[:3])) for r in dead)
    print("reasons:", dict(kinds.most_common()))
