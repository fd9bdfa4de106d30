"""``Publisher(linger_s=...)``: the call writes the spool file and returns; a thread sends
what gathered in one pipeline. What the bot was told about reaches the stream, in order,
through outages, a wrong password and a SIGKILL of the bot."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import AsyncPublisher, Publisher, PublishError
from contracts import spool as spool_module
from contracts.spool import Spool
from worker.embedded import EmbeddedRedis

LINGER_S = 0.005


def _stream_trade_ids(url: str, stream: str) -> list[str]:
    """Trade ids in stream order, each once (a re-sent chunk may store an entry twice;
    the worker keeps one)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        entries = client.xrange(stream)
    finally:
        client.close()
    seen: dict[str, None] = {}
    for _, fields in entries:
        seen.setdefault(json.loads(fields["event"])["data"]["trade_id"], None)
    return list(seen)


def _open(n: int) -> dict[str, str]:
    return {"trade_id": f"T{n}", "symbol": "BTCUSDT", "side": "buy", "quantity": "1",
            "entry_price": "100"}  # fmt: skip


def test_a_lingering_publisher_sends_everything_in_order_and_empties_its_spool(
    redis_url: str, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "sp"
    with Publisher(
        redis_url, source="bot-l", stream="s-linger", spool_dir=spool_dir, linger_s=LINGER_S
    ) as pub:
        for n in range(3000):
            pub.publish("trade.opened", _open(n))
    assert _stream_trade_ids(redis_url, "s-linger") == [f"T{n}" for n in range(3000)]
    assert [f.stat().st_size for f in spool_dir.glob("*.spool")] == [0]


def test_a_lingering_publisher_spools_through_an_outage_in_order(
    own_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    with Publisher(
        own_redis.url, source="bot-m", stream="s", spool_dir=tmp_path, linger_s=LINGER_S
    ) as pub:
        for n in range(10):
            pub.publish("trade.opened", _open(n))
        own_redis.stop()
        for n in range(10, 30):
            pub.publish("trade.opened", _open(n))
        deadline = time.monotonic() + 10
        while (status := pub.spool_status()) is not None and not status.last_error:
            assert time.monotonic() < deadline, "the drain never noticed the outage"
            time.sleep(0.01)
        own_redis.start()
        for n in range(30, 40):
            pub.publish("trade.opened", _open(n))
        assert pub.flush(timeout_s=10)
    assert _stream_trade_ids(own_redis.url, "s") == [f"T{n}" for n in range(40)]


BOT = """
import sys, time
from contracts import Publisher
url, spool_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
pub = Publisher(url, source="bot-k", stream="s-kill", spool_dir=spool_dir, linger_s=0.5)
for k in range(n):
    pub.publish("trade.opened", trade_id=f"T{k}", symbol="BTCUSDT", side="buy",
                quantity="1", entry_price="100")
print("published", flush=True)
time.sleep(60)
"""


def test_events_a_killed_bot_was_told_about_are_sent_by_its_next_start(
    redis_url: str, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "sp"
    n = 400
    bot = subprocess.Popen(
        [sys.executable, "-c", BOT, redis_url, str(spool_dir), str(n)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    try:
        assert bot.stdout is not None
        assert bot.stdout.readline().strip() == "published"
        os.kill(bot.pid, signal.SIGKILL)  # within its 0.5 s linger: most events unsent
    finally:
        bot.kill()
        bot.wait()
        if bot.stdout is not None:
            bot.stdout.close()
    sent_before = len(_stream_trade_ids(redis_url, "s-kill"))
    with Publisher(redis_url, source="bot-k", stream="s-kill", spool_dir=spool_dir) as pub:
        assert pub.flush(timeout_s=10)
    print(f"{sent_before} of {n} in the stream at the kill")
    assert sent_before < n  # the kill did leave events to the spool
    assert _stream_trade_ids(redis_url, "s-kill") == [f"T{k}" for k in range(n)]


EXITING_SCRIPT = """
import sys
from contracts import Publisher
pub = Publisher(sys.argv[1], source="script", stream="s-exit", spool_dir=sys.argv[2],
                linger_s=0.5)
for k in range(50):
    pub.publish("trade.opened", trade_id=f"T{k}", symbol="BTCUSDT", side="buy",
                quantity="1", entry_price="100")
"""


def test_a_script_that_exits_without_close_still_sends_what_lingers(
    redis_url: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", EXITING_SCRIPT, redis_url, str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert _stream_trade_ids(redis_url, "s-exit") == [f"T{k}" for k in range(50)]


def test_a_wrong_password_is_raised_at_a_later_call_and_the_events_wait(
    redis_url: str, tmp_path: Path
) -> None:
    url = redis_url.replace("redis://", "redis://nobody:wrong@")
    with Publisher(url, source="bot-p", stream="s", spool_dir=tmp_path, linger_s=LINGER_S) as pub:
        pub.publish("trade.opened", _open(0))  # accepted into the spool
        deadline = time.monotonic() + 10
        with pytest.raises(PublishError, match=r"nobody:\*\*\*@"):  # noqa: PT012
            while time.monotonic() < deadline:
                pub.publish("trade.opened", _open(1))
                time.sleep(0.01)
        status = pub.spool_status()
        assert status is not None
        assert status.events >= 1
        assert status.last_error


def test_linger_needs_the_spool_and_a_sane_value(redis_url: str, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="linger_s > 0 needs spool=True"):
        Publisher(redis_url, source="b", spool=False, linger_s=0.01)
    with pytest.raises(TypeError, match="between 0 and 1 second"):
        Publisher(redis_url, source="b", spool_dir=tmp_path, linger_s=5)
    with pytest.raises(TypeError, match="AsyncPublisher.. takes no linger_s"):
        AsyncPublisher(redis_url, source="b", spool_dir=tmp_path, linger_s=0.01)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.integers(1, 30)),
            st.tuples(st.just("send"), st.integers(1, 40)),
            st.tuples(st.just("crash"), st.just(0)),
        ),
        max_size=25,
    )
)
def test_a_spool_written_while_it_is_sent_keeps_every_line_once_in_order(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, steps: list
) -> None:
    """Appends (not fsync'd), sends of what is there, and crashes (the files closed
    unsent and adopted by a new Spool), with files rotated every 40 bytes sent: the
    lines sent are every line appended, in order of their first sending; a line is sent
    twice only when a crash came after it was sent and before its file was emptied
    (harmless: the event log refuses a known id)."""
    monkeypatch.setattr(spool_module, "ROTATE_BYTES", 40)
    directory = tmp_path_factory.mktemp("spool")
    spool = Spool(directory, "bot")
    appended: list[str] = []
    sent: list[str] = []

    def send(limit: int) -> None:
        chunk = spool.chunk(limit)
        if chunk is not None:
            sent.extend(chunk.lines)
            spool.advance(chunk)

    for action, k in steps:
        if action == "append":
            for _ in range(k):
                appended.append(f'{{"n":{len(appended)}}}')
                spool.append(appended[-1], durable=False)
        elif action == "send":
            send(k)
        else:
            spool.close()
            spool = Spool(directory, "bot")
    while spool.pending:
        send(50)
    spool.close()
    assert list(dict.fromkeys(sent)) == appended
    if all(action != "crash" for action, _ in steps):
        assert sent == appended
    left = [p for p in directory.glob("*.spool") if p.stat().st_size]
    assert left == []
    assert len(list(directory.glob("*.spool"))) <= 2  # sent files removed, at most ours kept
