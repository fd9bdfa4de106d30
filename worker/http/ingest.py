"""``POST /api/v1/events``: events in the wire format, validated as ``Publisher``
validates them, appended to the stream in one MULTI/EXEC (all of a request or
none of it); the worker stays the only writer of the database.

A ``--publish`` token is bound to one source and its accounts: an event's
``source`` must be that source (it is filled in when left out) and its
``account`` one of the token's (filled in when the token has exactly one).
``id`` and ``ts`` are filled in when left out, as ``Publisher.publish`` does;
webhooks that can neither make an id nor set a header (freqtrade, TradingView)
send the token as a top-level ``"token"`` field instead of ``Authorization``,
which never reaches the stream (only the model's fields are written).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import ValidationError

from contracts.events import EVENT_ADAPTER, WIRE_FIELD, AnyEvent, to_wire
from contracts.ids import new_event_id
from contracts.partitions import stream_for
from contracts.redisclient import AsyncRedis
from worker.http.tokens import Principal

MAX_EVENTS = 1000
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_EVENT_BYTES = 65_536  # the worker's default max_message_bytes: larger is dead-lettered


class IngestError(Exception):
    """A request whose events are not all valid; ``errors`` names each one."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} invalid event(s)")
        self.errors = errors


def token_in_body(body: Any) -> str | None:
    """A webhook's token: the top-level ``token`` of the body (object form only)."""
    if isinstance(body, dict) and isinstance(body.get("token"), str):
        return str(body["token"])
    return None


def as_list(body: Any) -> list[Any]:
    if isinstance(body, dict) and isinstance(body.get("events"), list):
        return list(body["events"])
    if isinstance(body, list):
        return body
    return [body]


def validate(principal: Principal, body: Any) -> list[AnyEvent]:
    """Every event of the request, or ``IngestError`` naming each bad one's fields."""
    items = as_list(body)
    if not items or len(items) > MAX_EVENTS:
        raise IngestError([{"index": None, "errors": [
            {"loc": [], "msg": f"send 1 to {MAX_EVENTS} events, got {len(items)}"}]}])  # fmt: skip
    events: list[AnyEvent] = []
    errors: list[dict[str, Any]] = []
    source = principal.sources[0]
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            errors.append({"index": index, "errors": [{"loc": [], "msg": "not a JSON object"}]})
            continue
        raw = {k: v for k, v in item.items() if k not in ("token", "events")}
        raw.setdefault("id", new_event_id())
        raw.setdefault("ts", dt.datetime.now(dt.UTC).isoformat())
        raw.setdefault("source", source)
        if len(principal.accounts) == 1:
            raw.setdefault("account", principal.accounts[0])
        try:
            event = EVENT_ADAPTER.validate_python(raw)
        except ValidationError as exc:
            found = [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"]}
                     for e in exc.errors(include_url=False)]  # fmt: skip
            errors.append({"index": index, "errors": found})
            continue
        problems = []
        if len(to_wire(event).encode()) > MAX_EVENT_BYTES:
            problems.append({"loc": [], "msg": f"larger than {MAX_EVENT_BYTES} bytes"})
        if event.source != source:
            problems.append({"loc": ["source"], "msg": f"this token publishes as {source!r} only"})
        if event.account not in principal.accounts:
            allowed = list(principal.accounts)
            problems.append({"loc": ["account"], "msg": f"this token publishes to {allowed} only"})
        if problems:
            errors.append({"index": index, "errors": problems})
        else:
            events.append(event)
    if errors:
        raise IngestError(errors)
    return events


async def append(
    client: AsyncRedis, stream: str, events: list[AnyEvent], partitions: int = 1
) -> list[str]:
    """XADD every event in one MULTI/EXEC: the stream gets all of them or none (one
    stream, one hash slot: a cluster runs it as a transaction on the stream's shard).
    With partitions each event goes to its source's partition stream; a token is bound
    to one source, so a request's events share one stream."""
    async with client.pipeline(transaction=True) as pipe:
        for event in events:
            pipe.xadd(stream_for(stream, event.source, partitions), {WIRE_FIELD: to_wire(event)})
        await pipe.execute()
    return [event.id for event in events]
