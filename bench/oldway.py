"""The old way beside the new: 8 bots writing SQLite themselves vs 8 bots publishing.

Old way (as the seeds do it): 8 processes, each with its own connection to one
shared SQLite file in WAL mode (Python's default ``synchronous``, FULL), one
commit per trade event, ``timeout=5.0`` (busy_timeout 5000 ms, Python's
default). A ``sqlite3.OperationalError`` ("database is locked") is counted and
the event is lost, as it was in the seeds' bots.

New way: 8 processes publishing the same bots' events through
:class:`contracts.Publisher`, rate-limited to ``rate`` events/s each, while a
worker commits them; each call is timed.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import queue
import sqlite3
import threading
import time
from array import array
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.workload import SOURCES, TRADE_TYPES, SourceFlow
from contracts import Publisher

BUSY_TIMEOUT_S = 5.0
LEGACY_TRADES = """CREATE TABLE IF NOT EXISTS trades (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    trade_id TEXT UNIQUE NOT NULL,
    bot TEXT NOT NULL,
    symbol TEXT,
    side TEXT,
    quantity REAL,
    entry_price REAL,
    stop_loss REAL,
    take_profit REAL,
    current_price REAL,
    exit_price REAL,
    pnl REAL,
    status TEXT,
    exit_reason TEXT,
    opened_at TEXT,
    updated_at TEXT,
    closed_at TEXT
)"""
_CTX = mp.get_context("fork")  # children inherit the imported modules: no re-import cost


@dataclass
class ProcessResult:
    done: int
    errors: int
    seconds: float
    latencies_ms: array[float]
    cpu_s: float = 0.0  # the process's CPU time in its timed loop
    idle_cpu_us: float = 0.0  # CPU per iteration of the same rate-limited loop, no call
    in_call_cpu_us: float = 0.0  # the calling thread's CPU inside publish(), all calls


def _write_trade(con: sqlite3.Connection, source: str, event_type: str, d: dict[str, Any]) -> None:
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    if event_type == "trade.opened":
        con.execute(
            "INSERT INTO trades (trade_id, bot, symbol, side, quantity, entry_price, stop_loss,"
            " take_profit, status, opened_at, updated_at) VALUES (?,?,?,?,?,?,?,?,'open',?,?)",
            (
                d["trade_id"],
                source,
                d["symbol"],
                d["side"],
                float(d["quantity"]),
                float(d["entry_price"]),
                float(d["stop_loss"]),
                float(d["take_profit"]),
                now,
                now,
            ),
        )
    elif event_type == "trade.updated":
        con.execute(
            "UPDATE trades SET current_price = ?, pnl = ?, updated_at = ? WHERE trade_id = ?",
            (float(d["current_price"]), float(d["unrealized_pnl"]), now, d["trade_id"]),
        )
    else:
        con.execute(
            "UPDATE trades SET exit_price = ?, pnl = ?, exit_reason = ?, status = 'closed',"
            " closed_at = ?, updated_at = ? WHERE trade_id = ?",
            (float(d["exit_price"]), float(d["realized_pnl"]), d["exit_reason"], now, now,
             d["trade_id"]),
        )  # fmt: skip
    con.commit()


def _direct_bot(
    index: int, db: str, seconds: float, go: Barrier, out: Queue[ProcessResult]
) -> None:
    flow = SourceFlow(index)
    con = sqlite3.connect(db, timeout=BUSY_TIMEOUT_S)
    latencies: array[float] = array("d")
    done = errors = 0
    go.wait()
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        event_type, data = flow.next()
        if event_type not in TRADE_TYPES:
            continue
        t0 = time.perf_counter()
        try:
            _write_trade(con, flow.source, event_type, data)
            done += 1
        except sqlite3.OperationalError:
            errors += 1  # "database is locked": the bot logs it and the trade is lost
            con.rollback()
        latencies.append((time.perf_counter() - t0) * 1000)
    con.close()
    out.put(ProcessResult(done, errors, time.perf_counter() - started, latencies))


def _publisher_bot(
    index: int,
    url: str,
    stream: str,
    rate: float,
    seconds: float,
    linger_s: float,
    go: Barrier,
    out: Queue[ProcessResult],
) -> None:
    flow = SourceFlow(index)
    specs = [flow.next() for _ in range(int(rate * seconds))]
    latencies: array[float] = array("d")
    errors = 0
    with Publisher(
        url, source=flow.source, account=flow.account, plugin_id=flow.plugin_id,
        mode=flow.mode, stream=stream, linger_s=linger_s,
    ) as pub:  # fmt: skip
        pub.publish("audit.event", action="bench.warmup")  # connect before the clock starts
        go.wait()
        idle_cpu_us = _idle_loop_cpu_us(rate, min(1.0, seconds / 5))
        in_call = 0.0
        started = time.perf_counter()
        cpu_started = time.process_time()
        for k, (event_type, data) in enumerate(specs):
            _sleep_until(started + k / rate)
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                pub.publish(event_type, data)
            except Exception:
                errors += 1
            in_call += time.thread_time() - c0
            latencies.append((time.perf_counter() - t0) * 1000)
    cpu = time.process_time() - cpu_started  # with close(): a lingering publisher's last send
    seconds = time.perf_counter() - started
    out.put(
        ProcessResult(
            len(specs) - errors, errors, seconds, latencies, cpu, idle_cpu_us, in_call * 1e6
        )
    )


def _sleep_until(due: float) -> None:
    """The publishing bots' pacing: an absolute schedule, so a late call does not lower
    the offered rate."""
    wait = due - time.perf_counter()
    if wait > 0:
        time.sleep(wait)


def _idle_loop_cpu_us(rate: float, seconds: float) -> float:
    """CPU per iteration of the publish loop's pacing and timing alone (its sleeps'
    wake-ups are most of it), run by all the bots together before they publish."""
    n = max(1, int(rate * seconds))
    started, cpu_started = time.perf_counter(), time.process_time()
    for k in range(n):
        _sleep_until(started + k / rate)
        t0 = time.perf_counter()
        _ = (time.perf_counter() - t0) * 1000
    return (time.process_time() - cpu_started) * 1e6 / n


def _run_all(target: Any, args_for: Any, processes: int) -> list[ProcessResult]:
    go = _CTX.Barrier(processes + 1)  # all start together, once each is set up
    out: Queue[ProcessResult] = _CTX.Queue()
    procs = [_CTX.Process(target=target, args=(*args_for(i), go, out)) for i in range(processes)]
    for p in procs:
        p.start()
    try:
        go.wait(timeout=120)
        results = [out.get(timeout=300) for _ in procs]
    except (threading.BrokenBarrierError, queue.Empty) as exc:
        codes = [p.exitcode for p in procs]
        raise BenchError(f"a bot process did not finish (exit codes {codes})") from exc
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    return results


def run_direct(db: Path, seconds: float, processes: int = SOURCES) -> list[ProcessResult]:
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute(LEGACY_TRADES)
    con.commit()
    con.close()
    return _run_all(_direct_bot, lambda i: (i, str(db), seconds), processes)


def run_publishers(
    url: str,
    stream: str,
    rate: float,
    seconds: float,
    linger_s: float = 0.0,
    processes: int = SOURCES,
) -> list[ProcessResult]:
    """The publishing bots; ``linger_s`` as ``Publisher``'s (0: a round trip per call)."""
    return _run_all(_publisher_bot, lambda i: (i, url, stream, rate, seconds, linger_s), processes)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0 when empty)."""
    if not values:
        return 0.0
    rank = min(len(values), max(1, math.ceil(q / 100 * len(values)))) - 1
    return values[rank]


def latency_summary(results: list[ProcessResult]) -> dict[str, float]:
    merged = sorted(x for r in results for x in r.latencies_ms)
    return {
        "p50_ms": percentile(merged, 50),
        "p99_ms": percentile(merged, 99),
        "max_ms": merged[-1] if merged else 0.0,
    }
