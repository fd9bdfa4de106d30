"""The benchmark's events: a realistic mix from 8 bots, built fast as wire JSON.

Each source is a :class:`SourceFlow` with its own seeded random generator, so
the drain, the old way and the publishers all see the same trades of a source.
The mix is about 20% trade.opened, 40% trade.updated, 20% trade.closed (every
trade is opened, updated twice, closed), 10% signals (emitted, closed) and 10%
positions, daily stats and journal entries.

Wire JSON is built with ``json.dumps`` of plain dicts (pydantic per event would
make loading the stream slower than draining it); :func:`check_sample` proves
with :func:`contracts.events.parse_event` that what is built is valid.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Iterator
from typing import Any

from contracts.events import parse_event
from contracts.ids import new_event_id

SOURCES = 8
SYMBOLS = {"BTCUSDT": 43000.0, "ETHUSDT": 2300.0, "SOLUSDT": 95.0, "XAUUSD": 2030.0}
STRATEGIES = ("breakout", "mean-revert", "trend")
TRADE_TYPES = ("trade.opened", "trade.updated", "trade.closed")
_MAX_OPEN = 6

Spec = tuple[str, dict[str, Any]]  # (event type, data)


class SourceFlow:
    """One simulated bot: ``next()`` gives its next (type, data), deterministically."""

    def __init__(self, index: int, seed: int = 7) -> None:
        self.index = index
        self.source = f"bench-bot-{index}"
        # Each seed (each drain of a run) opens trades and signals of its own: a drain
        # that re-opened the trades an earlier phase closed would measure that instead.
        self.prefix = f"{self.source}-{seed}"
        self.account = f"ACC-{index % 2 + 1}"
        self.plugin_id = f"{STRATEGIES[index % 3]}-v1"
        self.mode = "paper"
        self.rng = random.Random(seed * 1000 + index)
        self.prices = dict(SYMBOLS)
        self.trades: dict[str, list[Any]] = {}  # trade_id -> [symbol, side, entry, steps]
        self.signals: list[str] = []
        self.count = 0

    def next(self) -> Spec:
        self.count += 1
        roll = self.rng.random()
        if roll < 0.8:
            return self._trade()
        if roll < 0.9:
            return self._signal()
        return self._other()

    def _price(self, symbol: str) -> float:
        price = self.prices[symbol] * (1 + self.rng.gauss(0, 0.002))
        self.prices[symbol] = price
        return price

    def _trade(self) -> Spec:
        rng = self.rng
        if not self.trades or (len(self.trades) < _MAX_OPEN and rng.random() < 0.25):
            trade_id = f"{self.prefix}-T{self.count}"
            symbol = rng.choice(list(SYMBOLS))
            side = rng.choice(("buy", "sell"))
            entry = self._price(symbol)
            self.trades[trade_id] = [symbol, side, entry, 0]
            return "trade.opened", {
                "trade_id": trade_id,
                "symbol": symbol,
                "side": side,
                "quantity": str(rng.randint(1, 20)),
                "entry_price": f"{entry:.4f}",
                "stop_loss": f"{entry * 0.98:.4f}",
                "take_profit": f"{entry * 1.03:.4f}",
                "strategy": STRATEGIES[self.index % 3],
                "order_id": f"O{self.count}",
            }
        trade_id = rng.choice(list(self.trades))
        state = self.trades[trade_id]
        symbol, side, entry, steps = state
        price = self._price(symbol)
        pnl = (price - entry) * (1 if side == "buy" else -1)
        if steps < 2:
            state[3] = steps + 1
            return "trade.updated", {
                "trade_id": trade_id,
                "current_price": f"{price:.4f}",
                "unrealized_pnl": f"{pnl:.4f}",
            }
        del self.trades[trade_id]
        return "trade.closed", {
            "trade_id": trade_id,
            "exit_price": f"{price:.4f}",
            "realized_pnl": f"{pnl:.4f}",
            "fees": "0.25",
            "exit_reason": "target" if pnl > 0 else "stop",
        }

    def _signal(self) -> Spec:
        rng = self.rng
        if not self.signals or (len(self.signals) < 4 and rng.random() < 0.5):
            signal_id = f"{self.prefix}-S{self.count}"
            self.signals.append(signal_id)
            symbol = rng.choice(list(SYMBOLS))
            return "signal.emitted", {
                "signal_id": signal_id,
                "symbol": symbol,
                "side": rng.choice(("buy", "sell")),
                "entry_price": f"{self._price(symbol):.4f}",
                "confidence": str(rng.randint(50, 99)),
                "timeframe": "5m",
                "strategy": STRATEGIES[self.index % 3],
            }
        signal_id = self.signals.pop(0)
        return "signal.closed", {"signal_id": signal_id, "exit_reason": "expired"}

    def _other(self) -> Spec:
        rng = self.rng
        roll = rng.random()
        symbol = rng.choice(list(SYMBOLS))
        if roll < 0.5:
            price = self._price(symbol)
            return "position.updated", {
                "symbol": symbol,
                "quantity": str(rng.randint(0, 5)),
                "entry_price": f"{price * 0.99:.4f}",
                "current_price": f"{price:.4f}",
                "unrealized_pnl": f"{price * 0.01:.4f}",
            }
        if roll < 0.8:
            return "daily_stats.updated", {
                "date": dt.date.today().isoformat(),
                "total_realized_pnl": f"{rng.uniform(-500, 500):.2f}",
                "number_of_trades": self.count // 5,
                "paper_balance": f"{10000 + rng.uniform(-500, 500):.2f}",
            }
        trade_id = next(iter(self.trades), None)
        entry: dict[str, Any] = {
            "text": f"{symbol} looks {rng.choice(('strong', 'weak', 'flat'))} after the news",
            "title": "note",
            "category": "analysis",
            "tags": [symbol, "auto"],
        }
        if trade_id is not None:
            entry["trade_id"] = trade_id
        return "journal.entry", entry

    def envelope(self, spec: Spec, event_id: str, ts: str) -> dict[str, Any]:
        event_type, data = spec
        return {
            "id": event_id,
            "type": event_type,
            "source": self.source,
            "ts": ts,
            "account": self.account,
            "plugin_id": self.plugin_id,
            "mode": self.mode,
            "data": data,
        }


def now_text() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def wire_events(n: int, seed: int = 7, sources: int = SOURCES) -> Iterator[str]:
    """``n`` wire JSON values from ``sources`` bots, interleaved at random."""
    flows = [SourceFlow(i, seed) for i in range(sources)]
    pick = random.Random(seed)
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    ts = now_text()
    for i in range(n):
        if i % 256 == 0:
            ts = now_text()
        flow = flows[pick.randrange(sources)]
        yield dumps(flow.envelope(flow.next(), new_event_id(), ts))


def check_sample(bodies: list[str], every: int = 97) -> int:
    """Validate every ``every``-th body with the real parser; returns how many."""
    sample = bodies[::every] or bodies
    for body in sample:
        parse_event(body)  # raises pydantic.ValidationError if the builder is wrong
    return len(sample)
