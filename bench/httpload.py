"""Step 8, the HTTP door under load: ``tradescribe serve`` on the reads phase's database.

1. **Latency.** 20 clients (threads of the bench, one keep-alive connection each, half
   with an admin token, half with a one-account token) each request the routes of
   :data:`bench.serve_http.CASES` in turn, starting at a different one, for a bounded
   time; after each answer a client waits :data:`THINK_S` (a person or a page, not a
   load generator). Per route: requests, p50 and p99 of the time from sending the
   request to reading the last byte of the answer.
2. **The drain beside dashboards.** The worker drains the same number of new events
   into that database twice, serve running both times: first with nobody polling, then
   with 20 clients fetching ``/api/v1/dashboard`` as the page does while commits keep
   coming (one fetch in flight, fetches at least :data:`PAGE_SPACING_S` apart, start to
   start). ``http_drain_ratio`` is the second rate over the first.
3. **Commit to client.** With the worker running and the 20 dashboards polling as in 2,
   one bot opens and closes trades through ``contracts.Publisher`` at a steady
   :data:`LIVE_TRADES_PER_S` while a client holds ``GET /api/v1/events/stream`` (the
   page's transport, with the one-account token). Per event: when the client read its
   ``commit`` message (wall clock) minus its ``committed_at``, which the worker stamps
   at the *start* of the transaction that stores it (so the transaction's own time is
   counted in); and minus the moment ``publish()`` returned.

Everything is on 127.0.0.1; every loop ends at a deadline.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench import drain, oldway
from bench.errors import BenchError
from bench.serve_http import CASES
from bench.workload import wire_events
from contracts.publisher import Publisher
from worker.http.tokens import TokenStore
from worker.settings import Settings

HOST = "127.0.0.1"
CLIENTS = 20
THINK_S = 1.0  # a client's pause after each answer in the latency part
PAGE_SPACING_S = 0.3  # the page's least time between two dashboard fetches (start to start)
DASHBOARD = "/api/v1/dashboard?tz=Europe/Berlin"
TARGET_P99_MS = 100.0
LIVE_TRADES_PER_S = 10.0  # trades opened and closed per second in the commit-to-client part
TARGET_LIVE_P99_MS = 1000.0
SERVE_NICE = 10  # as deploy/tradescribe-serve.service runs it (Nice=10)
_REQUEST_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _below_the_worker() -> None:
    """In the child before exec: the unit's ``Nice=`` (never raised above the bench's own)."""
    os.setpriority(os.PRIO_PROCESS, 0, max(SERVE_NICE, os.getpriority(os.PRIO_PROCESS, 0)))


class Serve:
    """``tradescribe serve`` as a child process, at the deploy unit's CPU priority;
    started when uvicorn says it listens."""

    def __init__(self, db: Path, tokens: Path, log: Path) -> None:
        self.port = free_port()
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRADESCRIBE_")}
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "worker.cli", "serve", "--db", str(db), "--tokens",
                 str(tokens), "--host", HOST, "--port", str(self.port)],
                env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_below_the_worker,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while "Uvicorn running on" not in log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = log.read_text(errors="replace")[-800:]
                raise BenchError(f"tradescribe serve did not start: {tail}")
            time.sleep(0.05)
        self.nice = os.getpriority(os.PRIO_PROCESS, self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Client:
    """One client: its token, its connection, what it measured."""

    port: int
    token: str
    times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    _conn: http.client.HTTPConnection | None = None

    def get(self, path: str, label: str = "") -> float:
        """One GET on the held connection; its milliseconds, kept under ``label``
        (default: the path); an error is kept too."""
        started = time.perf_counter()
        try:
            if self._conn is None:
                self._conn = http.client.HTTPConnection(HOST, self.port, timeout=_REQUEST_TIMEOUT_S)
            self._conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
            response = self._conn.getresponse()
            response.read()
            if response.status != 200:
                self.errors.append(f"{path}: HTTP {response.status}")
        except (OSError, http.client.HTTPException) as exc:
            self.errors.append(f"{path}: {exc!r}")
            self.close()
        ms = (time.perf_counter() - started) * 1000
        self.times[label or path].append(ms)
        return ms

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def page_threads(pollers: list[Client], stop: threading.Event) -> list[threading.Thread]:
    """One thread per client fetching the dashboard as the page does (one fetch in
    flight, fetches at least PAGE_SPACING_S apart, start to start) until ``stop``."""

    def poll(c: Client) -> None:
        while not stop.is_set():
            started = time.monotonic()
            c.get(DASHBOARD)
            stop.wait(max(started + PAGE_SPACING_S - time.monotonic(), 0))

    return [threading.Thread(target=poll, args=(c,), daemon=True) for c in pollers]


def run_clients(
    clients: list[Client], loop: Callable[[int, Client], None], seconds_max: float
) -> None:
    """Each client's ``loop`` in its own thread; all joined within ``seconds_max``."""
    threads = [threading.Thread(target=loop, args=(i, c), daemon=True) for i, c in
               enumerate(clients)]  # fmt: skip
    for t in threads:
        t.start()
    deadline = time.monotonic() + seconds_max
    for t in threads:
        t.join(max(deadline - time.monotonic(), 0.1))
    for c in clients:
        c.close()
    if any(t.is_alive() for t in threads):
        raise BenchError(f"HTTP clients still running after {seconds_max:.0f}s")


def latency(port: int, tokens: dict[str, str], seconds: float) -> dict[str, dict[str, Any]]:
    """20 clients over every route for ``seconds``; per token and route ("admin /api/...",
    "tenant /api/..."): n, p50, p99, max (ms)."""
    clients = [Client(port, tokens["admin" if i % 2 else "tenant"]) for i in range(CLIENTS)]
    labels = [f"{who} {path}" for who, path in CASES]
    end = time.monotonic() + seconds

    def loop(i: int, c: Client) -> None:
        # Each client asks its token's routes of CASES, from a different start; its
        # first request only warms the connection and the page cache.
        who = "admin" if i % 2 else "tenant"
        mine = [path for w, path in CASES if w == who]
        c.get(mine[0])
        c.times.clear()
        n = i // 2
        while time.monotonic() < end:
            path = mine[n % len(mine)]
            c.get(path, f"{who} {path}")
            n += 1
            time.sleep(min(THINK_S, max(end - time.monotonic(), 0)))

    run_clients(clients, loop, seconds + 2 * _REQUEST_TIMEOUT_S)
    merged: dict[str, list[float]] = defaultdict(list)
    for c in clients:
        if c.errors:
            raise BenchError(f"HTTP client failed: {c.errors[0]}")
        for label, times in c.times.items():
            merged[label].extend(times)
    out = {}
    for label in labels:
        times = sorted(merged[label])
        if times:
            out[label] = {"n": len(times), "p50_ms": oldway.percentile(times, 50),
                         "p99_ms": oldway.percentile(times, 99), "max_ms": times[-1]}  # fmt: skip
    return out


def drain_with_pollers(
    client: redis.Redis,
    settings: Settings,
    bodies: list[str],
    log: Path,
    pollers: list[Client],
) -> tuple[float, list[float], drain.WalWatch]:
    """A fresh worker drains ``bodies`` into ``settings.db`` while ``pollers`` fetch
    the dashboard as the page does; (events/s, the pollers' dashboard times, the WAL's
    sizes meanwhile)."""
    s = settings
    client.delete(s.stream)
    ids = drain.load_stream(client, s.stream, bodies)
    client.xgroup_create(s.stream, s.group, id="0")
    stop = threading.Event()

    threads = page_threads(pollers, stop)
    for t in threads:
        t.start()
    child = drain.WorkerChild(s, log)
    wal = drain.WalWatch(s.db)
    try:
        first, last = drain.wait_drained(
            client, child, ids[-1], timeout_s=60 + len(ids) / 2000, on_poll=wal
        )
    finally:
        stop.set()
        child.stop()
        for t in threads:
            t.join(_REQUEST_TIMEOUT_S + 5)
        for c in pollers:
            c.close()
    client.delete(s.stream)
    times = sorted(t for c in pollers for t in c.times[DASHBOARD])
    errors = [e for c in pollers for e in c.errors]
    if errors:
        raise BenchError(f"dashboard poller failed: {errors[0]}")
    return len(ids) / max(last - first, 1e-9), times, wal


class StreamListener:
    """A client holding ``GET /api/v1/events/stream`` in a thread: for each ``commit``
    message, the wall-clock time it was read and its data."""

    def __init__(self, port: int, token: str) -> None:
        self.heard: list[tuple[float, dict[str, Any]]] = []
        self.error: str | None = None
        self._conn = http.client.HTTPConnection(HOST, port, timeout=_REQUEST_TIMEOUT_S)
        self._conn.request("GET", "/api/v1/events/stream",
                           headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        self._response = self._conn.getresponse()
        if self._response.status != 200:
            raise BenchError(f"the live stream answered HTTP {self._response.status}")
        if not self._response.readline().startswith(b"retry:"):
            raise BenchError("the live stream did not say hello")
        self._stopped = False
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        kind = ""
        try:
            while line := self._response.readline():
                if line.startswith(b"event: "):
                    kind = line[7:].strip().decode()
                elif line.startswith(b"data: ") and kind == "commit":
                    self.heard.append((time.time(), json.loads(line[6:])))
        except (OSError, ValueError, AttributeError, http.client.HTTPException) as exc:
            if not self._stopped:  # AttributeError: http.client, reading a closed socket
                self.error = repr(exc)

    def close(self) -> None:
        self._stopped = True
        sock = self._conn.sock
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)  # the reading thread sees the end of the stream
        self._thread.join(5)
        self._conn.close()


def _epoch(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _spread(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    return {"p50_ms": oldway.percentile(ms, 50), "p99_ms": oldway.percentile(ms, 99),
            "max_ms": ms[-1]}  # fmt: skip


def commit_to_client(
    client: redis.Redis,
    settings: Settings,
    port: int,
    tokens: dict[str, str],
    seconds: float,
    log: Path,
) -> dict[str, Any]:
    """Part 3: trades published at a steady pace, each event's commit timed to the
    moment a live-stream client reads it, 20 dashboards polling meanwhile."""
    s = settings
    client.delete(s.stream)
    client.xgroup_create(s.stream, s.group, id="0", mkstream=True)
    pollers = [Client(port, tokens["admin" if i % 2 else "tenant"]) for i in range(CLIENTS)]
    stop = threading.Event()

    child = drain.WorkerChild(s, log)
    threads = page_threads(pollers, stop)
    published: dict[str, float] = {}
    listener: StreamListener | None = None
    try:
        drain.wait_reading(client, child)
        listener = StreamListener(port, tokens["tenant"])
        for t in threads:
            t.start()
        trades = max(int(seconds * LIVE_TRADES_PER_S), 1)
        with Publisher(s.redis_url, source="bench-live", account="ACC-1",
                       stream=s.stream) as pub:  # fmt: skip
            start = time.monotonic()
            for i in range(trades):
                time.sleep(max(start + i / LIVE_TRADES_PER_S - time.monotonic(), 0))
                trade = f"LIVE-{i}"
                eid = pub.publish("trade.opened", trade_id=trade, symbol="BTCUSDT", side="buy",
                                  quantity="1", entry_price="100.10")  # fmt: skip
                published[eid] = time.time()
                eid = pub.publish("trade.closed", trade_id=trade, exit_price="100.35")
                published[eid] = time.time()
        deadline = time.monotonic() + 30
        while len({d["event_id"] for _, d in listener.heard} & published.keys()) < len(published):
            child.check_alive()
            if time.monotonic() > deadline or listener.error:
                raise BenchError(f"the live stream did not bring every commit within 30 s "
                                 f"({listener.error or 'no error'})")  # fmt: skip
            time.sleep(0.05)
    finally:
        stop.set()
        if listener is not None:
            listener.close()
        child.stop()
        for t in threads:
            t.join(_REQUEST_TIMEOUT_S + 5)
        for c in pollers:
            c.close()
        client.delete(s.stream)
    heard = {d["event_id"]: (at, d) for at, d in listener.heard if d["event_id"] in published}
    commit = [(at - _epoch(d["committed_at"])) * 1000 for at, d in heard.values()]
    publish = [(at - published[eid]) * 1000 for eid, (at, _) in heard.items()]
    dash = [t for c in pollers for t in c.times[DASHBOARD]]
    return {
        "events": len(heard),
        "trades_per_s": LIVE_TRADES_PER_S,
        "commit_to_client": _spread(commit),
        "publish_to_client": _spread(publish),
        "dashboard_fetches": len(dash),
        "dashboard": _spread(dash) if dash else None,
    }


def measure_http(
    client: redis.Redis,
    settings: Settings,
    seconds: float,
    drain_events: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The figures under ``http`` in the JSON (``settings.db`` holds the reads data)."""
    workdir = settings.db.parent
    store = TokenStore(workdir / "http-tokens.db")
    tokens = {"admin": store.create("admin", [], [], admin=True)[0],
              "tenant": store.create("tenant", ["ACC-1"], [])[0]}  # fmt: skip
    serve = Serve(settings.db, store.path, workdir / "serve.log")
    serve_nice = serve.nice
    try:
        routes = latency(serve.port, tokens, seconds)
        slowest = max(routes, key=lambda p: routes[p]["p99_ms"])
        log(f"http: slowest p99 {routes[slowest]['p99_ms']:.0f} ms ({slowest}), "
            f"{CLIENTS} clients for {seconds:g}s")  # fmt: skip
        alone, _, _ = drain_with_pollers(
            client, settings, list(wire_events(drain_events, seed=31)), workdir / "h.log", []
        )
        pollers = [Client(serve.port, tokens["admin" if i % 2 else "tenant"])
                   for i in range(CLIENTS)]  # fmt: skip
        beside, dash, wal = drain_with_pollers(
            client, settings, list(wire_events(drain_events, seed=32)), workdir / "h.log", pollers
        )
        live = commit_to_client(client, settings, serve.port, tokens, seconds, workdir / "h.log")
    finally:
        serve.stop()
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{store.path}{suffix}").unlink(missing_ok=True)
    ratio = beside / alone
    log(f"http: drain {alone:,.0f} events/s alone, {beside:,.0f} beside {CLIENTS} dashboards "
        f"({ratio:.2f})")  # fmt: skip
    c2c = live["commit_to_client"]
    log(f"http: commit to live-stream client p50 {c2c['p50_ms']:.0f} ms, "
        f"p99 {c2c['p99_ms']:.0f} ms, max {c2c['max_ms']:.0f} ms "
        f"({live['events']:,} events)")  # fmt: skip
    return {
        "clients": CLIENTS,
        "seconds": seconds,
        "think_s": THINK_S,
        "routes": routes,
        "slowest_route": slowest,
        "slowest_p99_ms": routes[slowest]["p99_ms"],
        "p99_vs_target": routes[slowest]["p99_ms"] / TARGET_P99_MS,
        "drain_events": drain_events,
        "drain_alone_events_per_s": alone,
        "drain_beside_dashboards_events_per_s": beside,
        "drain_ratio": ratio,
        "dashboard_fetches_during_drain": len(dash),
        "wal_max_mb_beside_dashboards": wal.max_bytes / 2**20,
        "wal_end_mb_beside_dashboards": wal.last_bytes / 2**20,
        "db_mb_beside_dashboards": settings.db.stat().st_size / 2**20,
        "dashboard_p50_ms_during_drain": oldway.percentile(dash, 50) if dash else None,
        "dashboard_p99_ms_during_drain": oldway.percentile(dash, 99) if dash else None,
        "serve_nice": serve_nice,
        "live": live,
        "commit_to_client_p99_ms": c2c["p99_ms"],
        "commit_to_client_p99_vs_target": c2c["p99_ms"] / TARGET_LIVE_P99_MS,
    }
