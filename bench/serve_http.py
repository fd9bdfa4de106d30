"""How fast ``tradescribe serve`` answers over HTTP with 1,000,000 closed trades.

    .venv/bin/python bench/serve_http.py [--db /tmp/bench-queries.db] [--trades 1000000] [--runs 5]

Builds (or reuses) the database of ``bench/queries.py`` (``bench.readdata``),
makes an admin and a one-account token, starts ``tradescribe serve`` as its own
process, and times each request end to end (urllib on the same host: the query,
the scope, JSON encoding and HTTP). Prints each median; no assertion.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench import readdata
from worker.http.tokens import TokenStore

CASES = [
    ("admin", "/api/v1/dashboard?tz=Europe/Berlin"),
    ("tenant", "/api/v1/dashboard?tz=Europe/Berlin"),
    ("admin", "/api/v1/history"),
    ("tenant", "/api/v1/history?symbol=btc"),
    ("tenant", "/api/v1/pnl?tz=America/New_York"),
    ("tenant", "/api/v1/calendar?tz=Europe/Berlin"),
    ("tenant", "/api/trades?start_date=2026-10-01"),
    ("tenant", "/api/v1/bots"),
    ("admin", "/api/v1/health"),
    ("tenant", "/api/v1/health"),
    ("tenant", "/api/v1/history?format=csv&limit=1000"),
]


def get(url: str, token: str) -> tuple[float, int]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as r:
        size = len(r.read())
    return (time.perf_counter() - started) * 1000, size


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("/tmp/bench-queries.db"))
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--port", type=int, default=18470)
    args = parser.parse_args()
    if not args.db.exists():
        built = readdata.build(args.db, args.trades)
        print(f"built {args.db} with {args.trades:,} closed trades in {built.seconds:.1f}s")
    with tempfile.TemporaryDirectory() as tmp:
        store = TokenStore(Path(tmp) / "tokens.db")
        tokens = {"admin": store.create("admin", [], [], admin=True)[0],
                  "tenant": store.create("tenant", ["ACC-1"], [])[0]}  # fmt: skip
        serve = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "serve", "--db", str(args.db), "--tokens",
             str(store.path), "--port", str(args.port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert serve.stdout is not None
        for line in serve.stdout:
            if "Uvicorn running on" in line:
                break
        try:
            base = f"http://127.0.0.1:{args.port}"
            print(f"{'who':<7} {'request':<48} {'bytes':>9} {'median':>9} {'min':>8}")
            results = []
            for who, path in CASES:
                get(base + path, tokens[who])  # warm the page cache
                times, size = [], 0
                for _ in range(args.runs):
                    ms, size = get(base + path, tokens[who])
                    times.append(ms)
                median = statistics.median(times)
                results.append({"who": who, "path": path, "bytes": size, "median_ms": median})
                print(f"{who:<7} {path:<48} {size:>9,} {median:>7.1f}ms {min(times):>6.1f}ms",
                      flush=True)  # fmt: skip
        finally:
            serve.terminate()
            serve.wait(15)
            serve.stdout.close()
    print(json.dumps({"trades": args.trades, "runs": args.runs, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
