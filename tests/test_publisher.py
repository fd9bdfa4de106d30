"""The publishers' shared core and their lifecycle: options, closing, cancellation."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import redis

from contracts import AsyncPublisher, Publisher
from contracts.publisher import PublisherOptions
from contracts.publisher_core import PublisherKeywords
from tests.helpers import wait_for
from worker.embedded import free_port

TRADE = {"symbol": "BTCUSDT", "side": "buy", "quantity": "1", "entry_price": "100"}


@pytest.fixture
async def silent_redis() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A TCP server that accepts and reads but never answers: a Redis that hangs.

    Yields its URL and an event set once a client has sent it something."""
    heard = asyncio.Event()

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            heard.set()
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"redis://127.0.0.1:{port}/0", heard


def _spool_three(spool_dir: Path, source: str) -> None:
    """Leave three events in the spool of ``source``, as a run during an outage would."""
    down = f"redis://127.0.0.1:{free_port()}/0"
    with Publisher(down, source=source, stream="s", spool_dir=spool_dir) as pub:
        for n in range(3):
            pub.publish("trade.opened", trade_id=f"T{n}", **TRADE)
        assert pub.spool_status().events == 3  # type: ignore[union-attr]


async def test_aclose_passes_the_callers_cancellation_on_after_cleaning_up(
    silent_redis: tuple[str, asyncio.Event], tmp_path: Path
) -> None:
    url, heard = silent_redis
    _spool_three(tmp_path, "bot-x")
    pub = AsyncPublisher(url, source="bot-x", stream="s", spool_dir=tmp_path, timeout_s=60)
    await pub.publish("trade.opened", trade_id="T3", **TRADE)  # behind the spool: drain starts
    with anyio.fail_after(10):
        await heard.wait()  # the drain is now blocked on a Redis that never answers

    closer = asyncio.create_task(pub.aclose())
    await asyncio.sleep(0)  # one step of the loop: closer runs until it awaits the drain
    assert not closer.done()
    closer.cancel()
    with anyio.fail_after(10):
        await asyncio.wait([closer])
    assert closer.cancelled()

    # Cleaned up all the same: the spool was closed (its lock released, its events kept).
    down = f"redis://127.0.0.1:{free_port()}/0"
    with Publisher(down, source="bot-x", stream="s", spool_dir=tmp_path) as again:
        assert again.spool_status().events == 4  # type: ignore[union-attr]
        assert [p.name for p in tmp_path.glob("*.spool")] == ["bot-x.spool"]


def _envelopes(url: str, stream: str) -> list[dict[str, object]]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        entries = client.xrange(stream)
    finally:
        client.close()
    return [
        {k: v for k, v in json.loads(fields["event"]).items() if k not in ("id", "ts", "data")}
        for _, fields in entries
    ]


async def test_options_object_and_keywords_make_the_same_publisher(
    redis_url: str, names: dict[str, str]
) -> None:
    stream = names["stream"]
    given = {"source": "bot-o", "account": "ACC-1", "mode": "paper", "stream": stream}
    options = PublisherOptions(source="bot-o", account="ACC-1", mode="paper", stream=stream)
    with Publisher(redis_url, options=options) as pub:
        pub.publish("trade.opened", trade_id="T1", **TRADE)
    with Publisher(redis_url, **given) as pub:  # type: ignore[arg-type]
        pub.publish("trade.opened", trade_id="T2", **TRADE)
    async with AsyncPublisher(redis_url, options=options) as apub:
        await apub.publish("trade.opened", trade_id="T3", **TRADE)
    envelope = {"source": "bot-o", "account": "ACC-1", "mode": "paper", "type": "trade.opened"}
    assert _envelopes(redis_url, stream) == [envelope] * 3


def test_option_keywords_are_exactly_the_options_fields() -> None:
    fields = dataclasses.fields(PublisherOptions)
    assert set(PublisherKeywords.__annotations__) == {f.name for f in fields}
    required = {f.name for f in fields if f.default is dataclasses.MISSING}
    assert PublisherKeywords.__required_keys__ == required == {"source"}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, r"Publisher\(\) needs source= \(the bot's name\) or options=PublisherOptions"),
        (
            {"options": PublisherOptions(source="b"), "mode": "live"},
            r"options= or option keywords, not both \(got options= and mode\)",
        ),
        ({"source": "b", "sorce": "b"}, r"unexpected keyword argument 'sorce'"),
    ],
)
def test_a_constructor_given_the_wrong_options_says_what_to_give(
    arguments: dict[str, object], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        Publisher("redis://127.0.0.1:1/0", **arguments)  # type: ignore[call-overload]


def _corrupt_spool(spool_dir: Path, source: str) -> None:
    """A spool file whose first line is longer than any chunk may read (16 MiB)."""
    spool_dir.mkdir(mode=0o700)
    (spool_dir / f"{source}.spool").write_bytes(b"x" * (17 << 20) + b"\n")


def _drain_stopped(pub: Publisher | AsyncPublisher) -> bool:
    status = pub.spool_status()
    return status is not None and "drain of" in (status.last_error or "")


async def test_a_corrupt_spool_stops_the_drain_once_and_says_why(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _corrupt_spool(tmp_path / "sp", "bot-c")
    with (
        caplog.at_level(logging.ERROR, logger="contracts.publisher"),
        Publisher(redis_url, source="bot-c", stream="s", spool_dir=tmp_path / "sp") as pub,
    ):
        await wait_for(lambda: _drain_stopped(pub), timeout=10, what="the drain to stop")
        pub.publish("trade.opened", trade_id="T1", **TRADE)  # queued behind, not lost
        assert not pub.flush(timeout_s=0.2)  # no drain is started again ...
        status = pub.spool_status()
        assert status is not None
        assert status.events == 2
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # ... so it is said once, not once per publish or flush
    assert "spool drain of 'bot-c' stopped: spool file" in errors[0].getMessage()
    assert "line over 16 MiB" in errors[0].getMessage()
    assert errors[0].exc_info


async def test_a_corrupt_spool_stops_the_async_drain_once_and_says_why(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _corrupt_spool(tmp_path / "sp", "bot-d")
    with caplog.at_level(logging.ERROR, logger="contracts.publisher"):
        async with AsyncPublisher(
            redis_url, source="bot-d", stream="s", spool_dir=tmp_path / "sp"
        ) as pub:
            await wait_for(lambda: _drain_stopped(pub), timeout=10, what="the drain to stop")
            await pub.publish("trade.opened", trade_id="T1", **TRADE)
            assert not await pub.flush(timeout_s=0.2)
            assert pub.spool_status().events == 2  # type: ignore[union-attr]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "spool drain of 'bot-d' stopped" in errors[0].getMessage()
