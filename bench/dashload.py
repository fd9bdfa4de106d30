"""Phase 8 alone (``bench/httpload.py``) on a fresh reads-phase database, for measuring
a change to ``serve`` without the other phases' 20 minutes.

    .venv/bin/python -m bench.dashload [--trades 1000000] [--seconds 30] [--drain 200000]
        [--dir DIR] [--json FILE]

Builds ``reads.db`` as phase 7 does (``bench.readdata.build``, without timing its
cases), starts its own redis-server as ``tradescribe bench`` does, runs
``httpload.measure_http`` and prints per-route p50/p99, the drain ratio, the commit to
client p99 and serve's CPU seconds in each part (``/proc``), with the load average
at the start and the end of each part.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from rich.console import Console

from bench import drain, httpload, readdata, reads
from bench.run import Bench, Sizes
from worker.embedded import EmbeddedRedis, find_redis_server


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _instrument(parts: dict[str, dict[str, Any]]) -> None:
    """Wrap httpload's parts to note serve's CPU seconds and the load around each."""
    pid: dict[str, int] = {}
    serve_init = httpload.Serve.__init__

    def init(self: httpload.Serve, *a: Any, **k: Any) -> None:
        serve_init(self, *a, **k)
        pid["serve"] = self.process.pid

    httpload.Serve.__init__ = init  # type: ignore[method-assign]

    def wrap(name: str, fn: Any) -> Any:
        def run(*a: Any, **k: Any) -> Any:
            label = name
            if name == "drain":
                label = "drain beside dashboards" if a[-1] else "drain alone"
            cpu0, t0, load0 = drain.cpu_seconds(pid.get("serve")), time.monotonic(), _load()
            try:
                return fn(*a, **k)
            finally:
                parts[label] = {
                    "serve_cpu_s": round(drain.cpu_seconds(pid.get("serve")) - cpu0, 2),
                    "wall_s": round(time.monotonic() - t0, 1),
                    "load_before": load0,
                    "load_after": _load(),
                }

        return run

    httpload.latency = wrap("latency", httpload.latency)
    httpload.drain_with_pollers = wrap("drain", httpload.drain_with_pollers)
    httpload.commit_to_client = wrap("commit to client", httpload.commit_to_client)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trades", type=int, default=reads.FULL_TRADES)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--drain", type=int, default=200_000)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    console = Console(stderr=True)
    parts: dict[str, dict[str, Any]] = {}
    _instrument(parts)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="dashload-") as tmp:
        workdir = Path(tmp)
        server = EmbeddedRedis(find_redis_server("system"), directory=workdir / "redis",
                               appendonly=True,
                               extra_args=("--auto-aof-rewrite-percentage", "0"))  # fmt: skip
        server.start()
        client = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            sizes = Sizes(0, (), 0, 0, 0, reads_trades=args.trades, http_s=args.seconds,
                          http_drain=args.drain)  # fmt: skip
            pid = server.process.pid if server.process is not None else None
            bench = Bench(workdir, sizes, console, client, server.url, pid)
            s = bench.settings("reads")
            console.log(f"load {_load()}; building {args.trades:,} closed trades")
            built = readdata.build(s.db, args.trades)
            console.log(f"built in {built.seconds:.1f} s; load {_load()}")
            try:
                result = httpload.measure_http(client, s, args.seconds, args.drain, console.log)
            finally:
                reads.remove(s.db)
        finally:
            client.close()
            server.cleanup()
    result["parts"] = parts
    print(f"{'route':58} {'n':>4} {'p50':>7} {'p99':>7} {'max':>7}")
    for label, r in result["routes"].items():
        print(f"{label:58} {r['n']:4d} {r['p50_ms']:7.1f} {r['p99_ms']:7.1f} {r['max_ms']:7.1f}")
    print(f"slowest p99 {result['slowest_p99_ms']:.1f} ms ({result['slowest_route']})")
    print(f"drain alone {result['drain_alone_events_per_s']:,.0f}/s, beside dashboards "
          f"{result['drain_beside_dashboards_events_per_s']:,.0f}/s, ratio "
          f"{result['drain_ratio']:.3f}; dashboard fetches during it "
          f"{result['dashboard_fetches_during_drain']}, p50 "
          f"{result['dashboard_p50_ms_during_drain']:.0f} ms p99 "
          f"{result['dashboard_p99_ms_during_drain']:.0f} ms")  # fmt: skip
    live = result["live"]
    print(f"commit to client p50 {live['commit_to_client']['p50_ms']:.0f} ms p99 "
          f"{live['commit_to_client']['p99_ms']:.0f} ms; dashboards meanwhile "
          f"{live['dashboard_fetches']} fetches")  # fmt: skip
    for name, p in parts.items():
        print(
            f"{name:26} serve CPU {p['serve_cpu_s']:6.2f} s in {p['wall_s']:5.1f} s; "
            f"load {p['load_before']} -> {p['load_after']}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
