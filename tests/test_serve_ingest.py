"""``POST /api/v1/events``: a --publish token appends validated events to the
stream (all of a request or none), and the documented webhook payloads
(docs/integrations/) end up stored by the worker."""

from __future__ import annotations

import http.client as httpclient
import json
import re
from pathlib import Path
from typing import Any

import redis

from contracts.query import run_query
from tests.helpers import count, running_worker, wait_for
from tests.servefix import ServeProcess, http, serve_process, token
from worker.settings import Settings

__all__ = ["serve_process"]
DOCS = Path(__file__).parents[1] / "docs" / "integrations"


def start(settings: Settings, tmp_path: Path, serve_process: Any) -> tuple[ServeProcess, Path]:
    tokens = tmp_path / "tokens.db"
    server = serve_process(settings.db, tokens, "--redis-url", settings.redis_url,
                           "--stream", settings.stream)  # fmt: skip
    return server, tokens


def stream_length(settings: Settings) -> int:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return int(client.xlen(settings.stream))
    finally:
        client.close()


def opened(trade_id: str, **extra: Any) -> dict[str, Any]:
    return {"type": "trade.opened", **extra,
            "data": {"trade_id": trade_id, "symbol": "BTCUSDT", "side": "buy",
                     "quantity": "0.5", "entry_price": "43000.50"}}  # fmt: skip


async def test_a_publish_token_appends_a_list_and_the_worker_stores_it(
    settings: Settings, tmp_path: Path, serve_process: Any
) -> None:
    server, tokens = start(settings, tmp_path, serve_process)
    secret = token(tokens, "grid", "ACC-1", sources=["grid-bot"], publish=True)
    events = [opened(f"H{i}") for i in range(1000)]
    reply = http(f"{server.url}/api/v1/events", secret, method="POST", body=events)
    assert reply.status == 200, reply.text
    ids = reply.json()["ids"]
    assert len(ids) == 1000 == len(set(ids)) == stream_length(settings)
    async with running_worker(settings):
        await wait_for(lambda: count(settings.db, "trades") == 1000, what="1000 trades stored")
    rows = run_query(settings.db, "active-trades").rows
    assert {(r["source"], r["account"], r["entry_price"]) for r in rows} == {
        ("grid-bot", "ACC-1", 43000.5)
    }
    one = http(f"{server.url}/api/v1/events", secret, method="POST", body=opened("single"))
    assert one.status == 200
    assert len(one.json()["ids"]) == 1


def test_one_bad_event_is_422_with_its_fields_and_nothing_is_published(
    settings: Settings, tmp_path: Path, serve_process: Any
) -> None:
    server, tokens = start(settings, tmp_path, serve_process)
    secret = token(tokens, "grid", "ACC-1", sources=["grid-bot"], publish=True)
    bad = opened("B2")
    bad["data"]["quantity"] = "-1"
    other_source = opened("B3", source="someone-else")
    reply = http(f"{server.url}/api/v1/events", secret, method="POST",
                 body=[opened("B1"), bad, other_source])  # fmt: skip
    assert reply.status == 422
    errors = reply.json()["events"]
    assert [e["index"] for e in errors] == [1, 2]
    assert errors[0]["errors"][0]["loc"][-1] == "quantity"
    assert "greater than 0" in errors[0]["errors"][0]["msg"]
    assert errors[1]["errors"][0]["loc"] == ["source"]
    too_many = http(f"{server.url}/api/v1/events", secret, method="POST",
                    body=[opened(f"M{i}") for i in range(1001)])  # fmt: skip
    assert too_many.status == 422
    # a body over 8 MiB is refused from its Content-Length, before it is sent
    conn = httpclient.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.putrequest("POST", "/api/v1/events")
    conn.putheader("Authorization", f"Bearer {secret}")
    conn.putheader("Content-Length", str(9 * 1024 * 1024))
    conn.endheaders()
    huge = conn.getresponse()
    assert huge.status == 413
    assert b"at most" in huge.read()
    conn.close()
    assert stream_length(settings) == 0


def test_only_publish_tokens_publish(
    settings: Settings, tmp_path: Path, serve_process: Any
) -> None:
    server, tokens = start(settings, tmp_path, serve_process)
    reader = token(tokens, "reader", "ACC-1")
    assert http(f"{server.url}/api/v1/events", reader, method="POST",
                body=opened("X")).status == 403  # fmt: skip
    assert http(f"{server.url}/api/v1/events", None, method="POST",
                body=opened("X")).status == 401  # fmt: skip
    assert stream_length(settings) == 0


def fill(template: str, values: dict[str, str], pattern: str) -> Any:
    """The documented payload with its placeholders filled as the sender fills them."""
    text = re.sub(pattern, lambda m: values[m.group(1)], template)
    return json.loads(text)


async def test_the_documented_freqtrade_webhook_stores_the_trade(
    settings: Settings, tmp_path: Path, serve_process: Any
) -> None:
    server, tokens = start(settings, tmp_path, serve_process)
    secret = token(tokens, "freqtrade", "binance-1", sources=["freqtrade"], publish=True)
    config = (
        (DOCS / "freqtrade-webhook.json").read_text().replace("TRADESCRIBE_PUBLISH_TOKEN", secret)
    )
    values = {"trade_id": "7", "pair": "ETH/USDT", "direction": "Long", "amount": "0.25",
              "open_rate": "2300.5", "strategy": "SampleStrategy", "close_rate": "2350.1",
              "profit_amount": "12.35", "exit_reason": "roi"}  # fmt: skip
    webhook = fill(config, values, r"\{(\w+)\}")["webhook"]
    for name in ("entry_fill", "exit_fill"):  # freqtrade POSTs each body as JSON
        reply = http(webhook["url"].replace("http://127.0.0.1:8470", server.url), None,
                     method="POST", body=webhook[name])  # fmt: skip
        assert reply.status == 200, reply.text
    async with running_worker(settings):
        await wait_for(lambda: count(settings.db, "trades", "status = 'closed'") == 1,
                       what="the freqtrade trade closed")  # fmt: skip
    rows = run_query(settings.db, "history", {"source": "freqtrade"}).rows
    assert [(r["trade_id"], r["symbol"], r["side"], r["account"], r["mode"], r["realized_pnl"],
             r["exit_reason"]) for r in rows] == [
        ("ft-7", "ETH/USDT", "buy", "binance-1", "paper", 12.35, "roi")]  # fmt: skip
    raw = run_query(settings.db, "trade", {"trade_id": "ft-7"}).sections["events"]
    assert all(secret not in json.dumps(e) for e in raw)  # the token never reaches the log


async def test_the_documented_tradingview_alert_stores_the_signal(
    settings: Settings, tmp_path: Path, serve_process: Any
) -> None:
    server, tokens = start(settings, tmp_path, serve_process)
    secret = token(tokens, "tv", "ACC-TV", sources=["tradingview"], publish=True)
    template = (
        (DOCS / "tradingview-alert.json").read_text().replace("TRADESCRIBE_PUBLISH_TOKEN", secret)
    )
    values = {"timenow": "2026-12-04T10:15:00Z", "ticker": "BTCUSDT",
              "strategy.order.action": "sell", "close": "97123.5", "interval": "15"}  # fmt: skip
    alert = fill(template, values, r"\{\{([\w.]+)\}\}")
    reply = http(f"{server.url}/api/v1/events", None, method="POST", body=alert)
    assert reply.status == 200, reply.text
    async with running_worker(settings):
        await wait_for(lambda: count(settings.db, "signals") == 1, what="the signal stored")
    rows = run_query(settings.db, "active-signals", {"source": "tradingview"}).rows
    got = [(r["signal_id"], r["symbol"], r["side"], r["entry_price"], r["timeframe"],
            r["account"]) for r in rows]  # fmt: skip
    assert got == [("tv-BTCUSDT-2026-12-04T10:15:00Z", "BTCUSDT", "sell", 97123.5, "15", "ACC-TV")]
