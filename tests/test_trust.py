"""No entry stops the worker, and the tables always equal a replay of the log (issue 14).

Each case sends crafted entries past the Publisher's validation (raw XADD) beside valid
events of other bots, and counts: sent = stored + dead-lettered, nothing pending, and
``db rebuild --check`` EQUAL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import ValidationError

from contracts import Publisher
from contracts.errors import PublishError
from contracts.events import WIRE_FIELD, build_event, parse_event, to_wire
from tests.helpers import (
    count,
    foreign_write_lock,
    pending,
    query,
    run_cli,
    running_worker,
    wait_for,
    wire_events,
)
from worker.settings import Settings
from worker.store.batch import Decoded
from worker.store.maintenance import rebuild_check

pytestmark = pytest.mark.faults

OPEN = {"trade_id": "T9", "symbol": "BTCUSDT", "side": "buy", "quantity": "1", "entry_price": "100"}


def trade_opened(source: str = "bot-a", **data: Any) -> dict[str, Any]:
    event = build_event("trade.opened", {**OPEN, **data}, source=source)
    return dict(json.loads(to_wire(event)))


def xadd(client: redis.Redis, stream: str, body: dict[str, Any] | str | bytes) -> str:
    value = json.dumps(body, allow_nan=True) if isinstance(body, dict) else body
    return str(client.xadd(stream, {WIRE_FIELD: value}).decode())


async def assert_log_equals_tables(db: Path) -> None:
    result = await rebuild_check(db)
    assert result["equal"], result["tables"]


def dead_reasons(db: Path) -> dict[str, str]:
    return dict(query(db, "SELECT stream_id, reason FROM dead_letters"))  # type: ignore[arg-type]


OVERFLOWING = [
    {"ts": "9999-12-31T23:59:59-01:00"},
    {"ts": "0001-01-01T00:00:00+23:59"},
    {"data": {"opened_at": "9999-12-31T23:59:59-01:00"}},
    {"data": {"closed_at": "0001-01-01T00:00:00+23:59"}},
]
UNREPRESENTABLE = [
    {"data": {"x": float("nan")}},
    {"data": {"attributes": {"y": [1, float("inf")]}}},
    {"data": {"z": float("-inf")}},
    {"data": {"quantity": "1e-999999"}},
    {"data": {"realized_pnl": "-1e-400"}},
    {"ts": 1_764_000_000},
    {"ts": "1764000000"},
    {"data": {"trade_id": "T\u00009"}},
    {"data": {"symbol": "BTC\u0000USDT"}},
]


def crafted(change: dict[str, Any]) -> dict[str, Any]:
    event = trade_opened("bot-x")
    for key, value in change.items():
        if key == "data":
            event["data"].update(value)
        else:
            event[key] = value
    return event


@pytest.mark.parametrize("change", OVERFLOWING + UNREPRESENTABLE, ids=repr)
def test_the_contract_refuses_what_a_projection_cannot_hold(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parse_event(json.dumps(crafted(change), allow_nan=True))


async def test_crafted_entries_are_dead_letters_and_every_other_bot_is_stored(
    settings: Settings, sync_redis: redis.Redis, names: dict[str, str]
) -> None:
    s = settings
    bad_ids = []
    valid = 0
    for i, change in enumerate(OVERFLOWING + UNREPRESENTABLE):
        for body in wire_events(f"bot-{i}", 6, start=i * 10):
            xadd(sync_redis, s.stream, body)
            valid += 1
        bad_ids.append(xadd(sync_redis, s.stream, crafted(change)))
    sent = valid + len(bad_ids)
    async with running_worker(s) as worker:
        await wait_for(lambda: count(s.db, "events") + count(s.db, "dead_letters") == sent)
        await wait_for(lambda: pending(sync_redis, names) == 0)
        assert not worker.stopping
    assert count(s.db, "events") == valid
    reasons = dead_reasons(s.db)
    assert sorted(reasons) == sorted(bad_ids)
    assert all(r.startswith("invalid event: ") for r in reasons.values()), reasons
    assert "no UTC equivalent" in reasons[bad_ids[0]]
    assert "must be finite" in reasons[bad_ids[len(OVERFLOWING)]]
    # No NaN reached the log: every stored body is strict JSON.
    for (body,) in query(s.db, "SELECT body FROM events"):
        json.loads(body, parse_constant=lambda c: pytest.fail(f"{c} in the log"))
    await assert_log_equals_tables(s.db)


async def test_an_event_whose_planning_raises_is_its_own_dead_letter(settings: Settings) -> None:
    """The root rule, below validation: whatever projecting one event raises (here an
    event built without validation, as a future bug might let through), that event is
    the dead letter and its neighbours are planned and stored."""
    good = [build_event("trade.opened", OPEN, source=f"b{i}") for i in (1, 2)]
    late = dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.timezone(dt.timedelta(hours=-1)))
    broken = good[0].model_copy(update={"id": "0190a0b0-0000-7000-8000-00000000dead", "ts": late})
    entries = [Decoded(f"1-{i}", to_wire(e), e) for i, e in enumerate([good[0], broken, good[1]])]
    async with running_worker(settings) as worker:
        batch = worker._prepare(entries, [])
        assert [d.stream_id for d in batch.good] == ["1-0", "1-2"]
        assert [d.stream_id for d in batch.dead] == ["1-1"]
        assert batch.dead[0].reason.startswith("cannot be stored: OverflowError")
        assert await worker._commit(batch.good, batch.dead, batch.prepared)
    assert count(settings.db, "events") == 2
    assert count(settings.db, "dead_letters") == 1


async def test_a_reused_id_with_another_body_is_an_id_conflict_and_changes_nothing(
    settings: Settings, sync_redis: redis.Redis, names: dict[str, str]
) -> None:
    s = settings
    first = trade_opened("bot-a")
    async with running_worker(s):
        xadd(sync_redis, s.stream, first)
        await wait_for(lambda: count(s.db, "events") == 1)
        # bot-b reuses bot-a's id: closed T9 with 5000 of P&L. Once alone, once in a batch
        # beside its own first copy, once with only the id's case changed.
        forged = trade_opened("bot-b", exit_price="150", realized_pnl="5000", status="closed")
        forged["id"] = first["id"]
        later = xadd(sync_redis, s.stream, forged)
        twin = trade_opened("bot-c")
        twin_conflict = {**twin, "source": "bot-d"}
        sync_redis.xadd(s.stream, {WIRE_FIELD: json.dumps(twin)})
        same_batch = xadd(sync_redis, s.stream, twin_conflict)
        upper = {**first, "id": first["id"].upper()}
        xadd(sync_redis, s.stream, upper)  # the same event: a duplicate, not a conflict
        assert first["ts"].endswith("Z")
        respelled = {**first, "ts": first["ts"][:-1] + "+00:00"}  # one instant, as ts
        xadd(sync_redis, s.stream, respelled)  # a duplicate too
        await wait_for(lambda: count(s.db, "dead_letters") == 2)
        await wait_for(lambda: pending(sync_redis, names) == 0)
    reasons = dead_reasons(s.db)
    assert sorted(reasons) == sorted([later, same_batch])
    assert all(r.startswith("id conflict: ") for r in reasons.values())
    assert query(s.db, "SELECT source, trade_id, status FROM trades ORDER BY source") == [
        ("bot-a", "T9", "open"),
        ("bot-c", "T9", "open"),
    ]
    assert count(s.db, "events") == 2
    raws = [json.loads(r) for (r,) in query(s.db, "SELECT raw FROM dead_letters ORDER BY id")]
    assert [r["source"] for r in raws] == ["bot-b", "bot-d"]  # the second bodies kept
    await assert_log_equals_tables(s.db)


async def test_redelivered_dead_letters_are_stored_once(
    settings: Settings, sync_redis: redis.Redis, names: dict[str, str]
) -> None:
    s = settings
    for change in UNREPRESENTABLE[:3]:
        xadd(sync_redis, s.stream, crafted(change))
    async with running_worker(s):
        await wait_for(lambda: count(s.db, "dead_letters") == 3)
        await wait_for(lambda: pending(sync_redis, names) == 0)
    sync_redis.xgroup_setid(s.stream, s.group, "0")  # an operator re-reads the whole stream
    xadd(sync_redis, s.stream, wire_events("after", 1)[0])
    async with running_worker(s):
        await wait_for(lambda: count(s.db, "events") == 1)
        await wait_for(lambda: pending(sync_redis, names) == 0)
    assert count(s.db, "dead_letters") == 3


async def test_oversized_entries_keep_a_prefix_and_a_hash_not_their_bytes(
    settings: Settings, sync_redis: redis.Redis, names: dict[str, str]
) -> None:
    s = settings
    big = json.dumps({**trade_opened("bot-big"), "pad": "x" * (2 << 20)}).encode()
    ids = [xadd(sync_redis, s.stream, big) for _ in range(10)]
    xadd(sync_redis, s.stream, wire_events("small", 1)[0])
    async with running_worker(s):
        await wait_for(lambda: count(s.db, "dead_letters") == 10 and count(s.db, "events") == 1)
        await wait_for(lambda: pending(sync_redis, names) == 0)
    rows = query(s.db, "SELECT stream_id, length(raw), raw_size, raw_sha256, event_id "
                       "FROM dead_letters")  # fmt: skip
    digest = hashlib.sha256(big).hexdigest()
    assert sorted(r[0] for r in rows) == sorted(ids)
    assert {r[1:] for r in rows} == {(4096, len(big), digest, json.loads(big)["id"])}
    # 20 MiB sent; the database holds the prefixes (40 KiB), not the bodies.
    assert s.db.stat().st_size + Path(f"{s.db}-wal").stat().st_size < 2 << 20
    # A prefix is not the event: replaying it is refused, and --all passes it over.
    first = query(s.db, "SELECT min(id) FROM dead_letters")[0][0]
    where = ("--db", str(s.db), "--redis-url", s.redis_url, "--stream", s.stream)
    refused = run_cli("dlq", "replay", str(first), *where)
    assert refused.code == 1, refused
    assert "cannot be replayed" in refused.err, refused
    assert run_cli("dlq", "replay", "--all", "--json", *where).json() == {"replayed": []}


async def test_a_locked_database_and_restarts_never_dead_letter_a_valid_event(
    settings: Settings, sync_redis: redis.Redis, names: dict[str, str]
) -> None:
    s = settings.model_copy(update={"max_deliveries": 2, "busy_timeout_ms": 50})
    sync_redis.xgroup_create(s.stream, s.group, id="0", mkstream=True)
    for body in wire_events("locked", 200):
        xadd(sync_redis, s.stream, body)
    async with running_worker(s):  # creates the schema
        await wait_for(lambda: count(s.db, "events") == 200)
    for body in wire_events("locked-later", 200):
        xadd(sync_redis, s.stream, body)
    with foreign_write_lock(s.db):
        for _ in range(6):  # six restarts while another process holds the write lock
            async with running_worker(s) as worker:
                await wait_for(lambda w=worker: "locked" in (w.stats.last_error or ""))
    async with running_worker(s):
        await wait_for(lambda: count(s.db, "events") == 400)
        await wait_for(lambda: pending(sync_redis, names) == 0)
    assert count(s.db, "dead_letters") == 0
    await assert_log_equals_tables(s.db)


def test_an_import_whose_local_time_has_no_utc_equivalent_names_the_record(
    tmp_path: Path,
) -> None:
    header = ("trade_id,symbol,entry_date,entry_price,trade_type,status,exit_date,exit_price,"
              "realized_pnl")  # fmt: skip
    rows = ["T1,MSFT,0001-01-01,330.31,LONG,CLOSED,0001-01-01,343.94,13.63",
            "T2,MSFT,2024-03-01,330.31,LONG,CLOSED,2024-04-01,343.94,13.63"]  # fmt: skip
    csv_file = tmp_path / "trades.csv"
    csv_file.write_text("\n".join([header, *rows]) + "\n")
    result = run_cli("import", "csv-trades", str(csv_file), "--timezone", "Asia/Tokyo",
                     "--dry-run")  # fmt: skip
    assert result.code == 1
    assert f"{csv_file}:2: invalid: ts: Value error, is out of range" in result.err + result.out
    assert "1 record(s) skipped" in result.err + result.out


def test_a_publisher_refuses_an_event_larger_than_an_entry_may_be(redis_url: str) -> None:
    with Publisher(redis_url, source="bot-big", spool=False) as pub:
        with pytest.raises(PublishError, match="more than the 65536 a stream entry may hold"):
            pub.publish("journal.entry", text="x", attributes={"blob": "y" * 70_000})
        assert pub.publish("journal.entry", text="x", attributes={"blob": "y" * 60_000})
