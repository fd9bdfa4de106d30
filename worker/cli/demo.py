"""``tradescribe demo``: an embedded redis-server, a worker and simulated bots.

The bots are ordinary synchronous programs using :class:`contracts.Publisher`,
each in its own thread; one of them also sends a malformed event, to show that
it is dead-lettered with its reason while everything around it is stored.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import shutil
import sqlite3
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import redis
from rich.console import Console
from rich.table import Table

from contracts import Publisher
from contracts.redisclient import sync_client
from contracts.redisurl import mask_url
from worker.cli.demo_history import LOT, WEEKS, history_events, publish_history
from worker.embedded import EmbeddedRedis, find_redis_server
from worker.errors import WorkerError
from worker.service import run_worker
from worker.settings import load_settings
from worker.stats import Stats

SYMBOLS = {"BTCUSDT": 43000, "ETHUSDT": 2300, "SOLUSDT": 95, "XAUUSD": 2030, "EURUSD": 1.08}
STRATEGIES = ("breakout", "mean-revert", "trend")


def simulate_bot(url: str, stream: str, index: int, seconds: float) -> int:
    """One bot trading on a random walk for ``seconds``; returns events published."""
    rng = random.Random(index)
    name = f"bot-{index}"
    prices = {s: Decimal(str(p)) for s, p in SYMBOLS.items()}
    open_trades: dict[str, dict[str, Any]] = {}
    sent = 0
    day_pnl = Decimal(0)
    with Publisher(
        url, source=name, account=f"ACC-{index % 2 + 1}", mode="paper", stream=stream
    ) as pub:
        deadline = time.monotonic() + seconds
        n = 0
        while time.monotonic() < deadline:
            n += 1
            symbol = rng.choice(list(prices))
            step = Decimal(str(round(rng.gauss(0, 0.004), 5)))
            prices[symbol] = (prices[symbol] * (1 + step)).quantize(Decimal("0.00001"))
            price = prices[symbol]
            if len(open_trades) < 4 and rng.random() < 0.3:
                trade_id = f"{name}-T{n}"
                side = rng.choice(("buy", "sell"))
                strategy = rng.choice(STRATEGIES)
                pub.publish(
                    "signal.emitted",
                    signal_id=f"{name}-S{n}",
                    symbol=symbol,
                    side=side,
                    entry_price=price,
                    strategy=strategy,
                    confidence=rng.randint(50, 99),
                )
                quantity = LOT[symbol] * rng.randint(1, 10)
                pub.publish(
                    "trade.opened",
                    trade_id=trade_id,
                    symbol=symbol,
                    side=side,
                    quantity=quantity,
                    entry_price=price,
                    strategy=strategy,
                    plugin_id=f"{strategy}-v1",
                )
                open_trades[trade_id] = {"symbol": symbol, "side": side, "entry": price,
                                         "quantity": quantity}  # fmt: skip
                sent += 2
            elif open_trades and rng.random() < 0.25:
                trade_id = rng.choice(list(open_trades))
                t = open_trades.pop(trade_id)
                exit_price = prices[t["symbol"]]
                direction = 1 if t["side"] == "buy" else -1
                pnl = (exit_price - t["entry"]) * t["quantity"] * direction
                day_pnl += pnl
                # A take-profit is a win and a stop-loss a loss; by hand, either.
                reason = "take_profit" if pnl > 0 else "stop_loss" if pnl < 0 else "manual"
                pub.publish(
                    "trade.closed",
                    trade_id=trade_id,
                    exit_price=exit_price,
                    exit_reason=reason if rng.random() < 0.7 else "manual",
                )
                pub.publish(
                    "journal.entry", text=f"closed {trade_id} at {exit_price}", trade_id=trade_id
                )
                sent += 2
            elif open_trades:
                trade_id = rng.choice(list(open_trades))
                pub.publish(
                    "trade.updated",
                    trade_id=trade_id,
                    current_price=prices[open_trades[trade_id]["symbol"]],
                )
                sent += 1
            if n % 10 == 0:
                pub.publish(
                    "daily_stats.updated",
                    date=time.strftime("%Y-%m-%d"),
                    number_of_trades=n,
                    daily_loss_limit=5000,
                    daily_loss_used=max(Decimal(0), -day_pnl),
                )
                pub.publish(
                    "position.updated",
                    symbol=symbol,
                    quantity=len(open_trades),
                    current_price=price,
                )
                sent += 2
            time.sleep(0.01)
    return sent


def send_malformed(url: str, stream: str) -> None:
    """What a buggy bot in another language might send: a negative quantity."""
    bad = {"id": "01890000-0000-7000-8000-00000000bad1", "type": "trade.opened",
           "source": "bot-broken", "ts": "2026-01-02T10:00:00+00:00",
           "data": {"trade_id": "X1", "symbol": "BTCUSDT", "side": "buy",
                    "quantity": "-3", "entry_price": "43000"}}  # fmt: skip
    client = sync_client(url)
    try:
        client.xadd(stream, {"event": json.dumps(bad)})
    finally:
        client.close()


def _check_reachable(url: str) -> None:
    """Fail at once with one line, rather than let the worker retry forever."""
    load_settings(None, redis_url=url)  # a malformed URL: one line naming the setting
    client = sync_client(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise WorkerError(
            f"cannot reach Redis at {mask_url(url)}: {exc} (fix --redis-url)"
        ) from exc
    finally:
        client.close()


def run_demo(
    *,
    redis_url: str | None,
    db: Path,
    seconds: float,
    bots: int,
    as_json: bool,
    port: int | None = None,
    keep_serving: bool = False,
) -> None:
    console = Console(stderr=True)
    if db.exists() or db.with_name(db.name + "-wal").exists():
        for suffix in ("", "-wal", "-shm", ".lock"):
            with contextlib.suppress(FileNotFoundError):
                db.with_name(db.name + suffix).unlink()
    server = None
    if redis_url is not None:
        _check_reachable(redis_url)
    else:
        server = EmbeddedRedis(find_redis_server(prefer="bundled"))
        server.start()
        redis_url = server.url
        console.print(f"started redis-server {server.version()} on {redis_url}")
    try:
        summary = anyio.run(_run, redis_url, db, seconds, bots, console, port)
    finally:
        if server is not None:
            server.cleanup()
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(summary, console=Console())
    if port is not None and not keep_serving and not as_json:
        again = f"tradescribe serve --db {db} (same token), or demo --keep-serving"
        console.print(f"the dashboard stopped with the demo; again: {again}", soft_wrap=True)
    if keep_serving and port is not None:
        from worker.http.demo import serve_until_interrupted

        serve_until_interrupted(db, summary["dashboard"], console)


async def _run(
    url: str, db: Path, seconds: float, bots: int, console: Console, port: int | None
) -> dict[str, Any]:
    stream = f"tradescribe:demo:{int(time.time())}"
    settings = load_settings(None, redis_url=url, db=db, stream=stream, group="demo",
                             consumer="demo", block_ms=100, trim_keep_s=0)  # fmt: skip
    counts: list[int] = []
    async with anyio.create_task_group() as tg:
        worker = await tg.start(lambda **kw: run_worker(settings, handle_signals=False, **kw))
        await worker.ready.wait()
        dashboard = None
        if port is not None:  # the live dashboard (worker/http), for as long as the bots run
            from worker.http.demo import DemoDashboard

            dashboard = DemoDashboard(db, url, stream, port)
            await tg.start(dashboard.run)
            console.print(f"dashboard: {dashboard.url}  token: {dashboard.token}", soft_wrap=True)
        started = time.monotonic()
        # The bots' past first, so that every chart has weeks to show from the start.
        past = history_events(bots, {s: float(p) for s, p in SYMBOLS.items()},
                              dt.datetime.now(dt.UTC).date())  # fmt: skip
        history = await anyio.to_thread.run_sync(publish_history, url, stream, past)
        console.print(f"worker writing to {db}; published {history} events of {WEEKS} weeks' "
                      f"history; {bots} bots trading for {seconds:g}s ...")  # fmt: skip

        async def bot(i: int) -> None:
            counts.append(await anyio.to_thread.run_sync(simulate_bot, url, stream, i, seconds))

        async with anyio.create_task_group() as bots_tg:
            for i in range(1, bots + 1):
                bots_tg.start_soon(bot, i)
        await anyio.to_thread.run_sync(send_malformed, url, stream)
        published = history + sum(counts) + 1
        with anyio.fail_after(60):
            while handled(worker.stats) < published:  # noqa: ASYNC110 - another task's counters
                await anyio.sleep(0.05)
        elapsed = time.monotonic() - started
        worker.stop()
        if dashboard is not None:
            dashboard.stop()
    summary = read_summary(db)
    summary.update(
        published=published, history_events=history, seconds=round(elapsed, 2), database=str(db)
    )
    if dashboard is not None:
        summary["dashboard"] = {"url": dashboard.url, "token": dashboard.token}
    return summary


def handled(stats: Stats) -> int:
    """Events the worker is done with: stored, refused as copies, or dead-lettered."""
    return stats.committed + stats.duplicates + stats.dead_letters


def read_summary(db: Path) -> dict[str, Any]:
    """What the database holds, read back through a read-only connection."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        bots = [
            dict(zip(("source", "opened", "closed", "open_now", "wins", "realized_pnl"), r,
                     strict=True))
            for r in con.execute(
                """SELECT source, count(*), sum(status = 'closed'), sum(status = 'open'),
                          sum(realized_pnl > 0), round(coalesce(sum(realized_pnl), 0), 2)
                   FROM trades GROUP BY source ORDER BY source"""
            )
        ]  # fmt: skip
        tables = {
            t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("events", "trades", "signals", "positions", "daily_stats",
                      "journal_entries", "dead_letters")
        }  # fmt: skip
        dead = [r[0] for r in con.execute("SELECT reason FROM dead_letters ORDER BY id")]
        first, last = con.execute("SELECT min(opened_at), max(closed_at) FROM trades").fetchone()
        days = con.execute(
            "SELECT count(DISTINCT substr(closed_at, 1, 10)) FROM trades WHERE status = 'closed'"
        ).fetchone()[0]
    finally:
        con.close()
    span = {"first_opened": first, "last_closed": last, "days_with_closes": days}
    return {"bots": bots, "rows": tables, "dead_letter_reasons": dead, "span": span}


def _print_summary(summary: dict[str, Any], console: Console) -> None:
    table = Table(title="What the database holds, per bot")
    for col in ("bot", "trades", "closed", "open", "wins", "realized P&L"):
        table.add_column(col, justify="left" if col == "bot" else "right")
    for b in summary["bots"]:
        table.add_row(b["source"], str(b["opened"]), str(b["closed"]), str(b["open_now"]),
                      str(b["wins"]), f"{b['realized_pnl']:.2f}")  # fmt: skip
    console.print(table)
    rows = summary["rows"]
    console.print(
        f"published {summary['published']} events ({summary['history_events']} of them "
        f"history) in {summary['seconds']}s; stored {rows['events']} in the event log, "
        f"{rows['dead_letters']} dead-lettered"
    )
    span = summary["span"]
    if span["first_opened"] is not None:
        console.print(
            f"trades from {span['first_opened'][:10]} to {str(span['last_closed'])[:10]}, "
            f"closed on {span['days_with_closes']} days"
        )
    console.print("rows: " + ", ".join(f"{k}={v}" for k, v in rows.items()))
    for reason in summary["dead_letter_reasons"]:
        console.print(f"dead letter: {reason}")
    console.print(f"database: {summary['database']} (open it read-only with sqlite3)")
    if shutil.which("sqlite3"):
        console.print(f"  sqlite3 'file:{summary['database']}?mode=ro' 'SELECT * FROM trades'")
