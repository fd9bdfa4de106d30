"""The demo's past: weeks of closed trades per bot, published before the live bots start.

Without it a newcomer's dashboard shows five seconds of trading: a cumulative P&L
of one point, a calendar of one day. Each symbol gets one hourly price path (the
same market for every bot) ending at the live bots' starting price; each bot opens
trades on it with a stop-loss and a take-profit and closes them when the path
crosses one (exit at that level: ``stop_loss`` is a loss, ``take_profit`` a win),
after a maximum hold (``time``), or now and then by hand (``manual``), either way
at the path's price. Everything is seeded and anchored to the start of the current
UTC day, and every event id is :func:`contracts.ids.stable_event_id` of the
event's time and key, so the same day's history is the same events: the event log
refuses a second copy.

The events are built and validated as ``Publisher.publish`` builds them and sent
with pipelined XADDs (a few hundred per round trip), so the backfill costs well
under a second of the demo.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections import defaultdict
from decimal import Decimal
from typing import Any

from contracts.events import build_event, to_wire
from contracts.ids import stable_event_id
from contracts.redisclient import sync_client

WEEKS = 6
#: Hourly volatility of each symbol's path (fraction of the price).
HOURLY_VOL = {"BTCUSDT": 0.005, "ETHUSDT": 0.006, "SOLUSDT": 0.008, "XAUUSD": 0.0015,
              "EURUSD": 0.0006}  # fmt: skip
#: One lot per symbol; a trade is 1 to 10 lots (a few thousand to a hundred thousand
#: of notional).
LOT = {"BTCUSDT": Decimal("0.1"), "ETHUSDT": Decimal(1), "SOLUSDT": Decimal(10),
       "XAUUSD": Decimal(1), "EURUSD": Decimal(10000)}  # fmt: skip
#: Decimal places of a price per symbol.
PLACES = {"BTCUSDT": 2, "ETHUSDT": 2, "SOLUSDT": 3, "XAUUSD": 2, "EURUSD": 5}
STRATEGIES = ("breakout", "mean-revert", "trend")
#: How often each bot reads the next hours right: bot-1 has an edge, bot-2 none.
EDGE = (0.12, 0.0, 0.06)
KEY = "tradescribe-demo-history"
DAILY_LOSS_LIMIT = 5000


def price(symbol: str, value: float) -> Decimal:
    return Decimal(str(round(value, PLACES[symbol])))


def price_paths(
    start_prices: dict[str, float], hours: int, seed: str = KEY
) -> dict[str, list[float]]:
    """One hourly path per symbol of ``hours + 1`` points, the last one its start price
    (the live bots go on from there)."""
    paths = {}
    for symbol, last in start_prices.items():
        rng = random.Random(f"{seed}:{symbol}")
        vol = HOURLY_VOL[symbol]
        logs = [0.0]
        for _ in range(hours):
            logs.append(logs[-1] + rng.gauss(0, vol))
        shift = math.log(last) - logs[-1]
        paths[symbol] = [math.exp(v + shift) for v in logs]
    return paths


def history_events(
    bots: int, start_prices: dict[str, float], today: dt.date, weeks: int = WEEKS
) -> list[dict[str, Any]]:
    """The wire JSON of every past event of ``bots`` bots, oldest first: per bot, trades
    opened and closed over ``weeks`` weeks before ``today`` (UTC), their journal lines,
    and each day's ``daily_stats``."""
    end = dt.datetime.combine(today, dt.time(), tzinfo=dt.UTC)
    hours = weeks * 7 * 24
    begin = end - dt.timedelta(hours=hours)
    paths = price_paths(start_prices, hours)
    symbols = list(start_prices)
    out: list[tuple[dt.datetime, str, dict[str, Any]]] = []
    for index in range(1, bots + 1):
        name = f"bot-{index}"
        tenancy = {"source": name, "account": f"ACC-{index % 2 + 1}", "mode": "paper"}
        rng = random.Random(f"{KEY}:{name}")
        edge = EDGE[(index - 1) % len(EDGE)]
        day_pnl: dict[dt.date, Decimal] = defaultdict(Decimal)
        day_trades: dict[dt.date, int] = defaultdict(int)

        def add(when: dt.datetime, event_type: str, key: str, data: dict[str, Any],
                extra: dict[str, Any] | None = None, *, name: str = name,
                tenancy: dict[str, str] = tenancy) -> None:  # fmt: skip
            event_id = stable_event_id(when, KEY, name, event_type, key)
            out.append((when, event_id, {"type": event_type, "data": data, "ts": when,
                                         "id": event_id, **tenancy, **(extra or {})}))  # fmt: skip

        hour = rng.randint(0, 6)
        n = 0
        while hour < hours - 2:
            n += 1
            symbol = rng.choice(symbols)
            path = paths[symbol]
            vol = HOURLY_VOL[symbol]
            opened = begin + dt.timedelta(hours=hour, minutes=rng.randint(0, 59))
            entry = path[hour]
            max_hold = rng.randint(4, 48)
            ahead = path[min(hour + max_hold // 2, hours)]
            if rng.random() < 0.5 + edge:  # right about the next hours
                side = "buy" if ahead >= entry else "sell"
            else:
                side = "sell" if ahead >= entry else "buy"
            sign = 1 if side == "buy" else -1
            width = vol * math.sqrt(max_hold) * rng.uniform(0.8, 1.6)
            sl = entry * (1 - sign * width)
            tp = entry * (1 + sign * width * rng.uniform(1.0, 2.0))
            exit_at, reason, exit_value = min(hour + max_hold, hours - 1), "time", 0.0
            for h in range(hour + 1, exit_at + 1):
                p = path[h]
                if (p - sl) * sign <= 0:
                    exit_at, reason, exit_value = h, "stop_loss", sl
                    break
                if (p - tp) * sign >= 0:
                    exit_at, reason, exit_value = h, "take_profit", tp
                    break
                if rng.random() < 0.01:
                    exit_at, reason = h, "manual"
                    break
            if reason in ("time", "manual"):
                exit_value = path[exit_at]
            closed = begin + dt.timedelta(hours=exit_at, minutes=rng.randint(0, 59))
            closed = max(closed, opened + dt.timedelta(minutes=5))
            closed = min(closed, end - dt.timedelta(seconds=1))
            quantity = LOT[symbol] * rng.randint(1, 10)
            entry_p, exit_p = price(symbol, entry), price(symbol, exit_value)
            pnl = (exit_p - entry_p) * quantity * sign
            trade_id = f"{name}-H{n}"
            strategy = rng.choice(STRATEGIES)
            add(opened, "trade.opened", trade_id,
                {"trade_id": trade_id, "symbol": symbol, "side": side, "quantity": quantity,
                 "entry_price": entry_p, "stop_loss": price(symbol, sl),
                 "take_profit": price(symbol, tp), "strategy": strategy, "opened_at": opened},
                {"plugin_id": f"{strategy}-v1"})  # fmt: skip
            add(closed, "trade.closed", trade_id,
                {"trade_id": trade_id, "exit_price": exit_p, "exit_reason": reason,
                 "closed_at": closed})  # fmt: skip
            add(
                closed,
                "journal.entry",
                trade_id,
                {"text": f"closed {trade_id} ({reason}) at {exit_p}", "trade_id": trade_id},
            )
            day_pnl[closed.date()] += pnl
            day_trades[closed.date()] += 1
            hour += rng.randint(2, 9)  # a few trades a day, some overlapping
        for day, pnl in sorted(day_pnl.items()):
            when = dt.datetime.combine(day, dt.time(23, 59, 59), tzinfo=dt.UTC)
            add(when, "daily_stats.updated", day.isoformat(),
                {"date": day, "total_realized_pnl": pnl, "number_of_trades": day_trades[day],
                 "daily_loss_limit": DAILY_LOSS_LIMIT,
                 "daily_loss_used": min(max(Decimal(0), -pnl), Decimal(10**9))})  # fmt: skip
    out.sort(key=lambda item: (item[0], item[1]))
    return [event for _, _, event in out]


def publish_history(url: str, stream: str, events: list[dict[str, Any]], chunk: int = 500) -> int:
    """Validate each event as ``Publisher.publish`` does and XADD them in pipelines of
    ``chunk``; returns how many were sent."""
    wires = []
    for e in events:
        envelope = {k: v for k, v in e.items() if k not in ("type", "data")}
        wires.append(to_wire(build_event(e["type"], e["data"], **envelope)))
    client = sync_client(url)
    try:
        for i in range(0, len(wires), chunk):
            pipe = client.pipeline(transaction=False)
            for wire in wires[i : i + chunk]:
                pipe.xadd(stream, {"event": wire})
            pipe.execute()
    finally:
        client.close()
    return len(wires)
