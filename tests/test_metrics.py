"""`--metrics-port`: the same counters, scraped over HTTP in Prometheus text format."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path
from urllib.error import URLError

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts import AsyncPublisher
from tests.helpers import make_settings, running_worker, wait_for
from worker.embedded import free_port
from worker.errors import ConfigError
from worker.service import run_worker


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


async def test_metrics_port_serves_the_worker_counters(
    tmp_path: Path, redis_url: str, names: dict[str, str]
) -> None:
    port = free_port()
    s = make_settings(
        tmp_path / "m.db", redis_url, names, metrics_port=port, heartbeat_interval_s=0.05
    )
    async with running_worker(s) as worker:
        async with AsyncPublisher(s.redis_url, source="bot", stream=s.stream) as pub:
            for n in range(2):
                await pub.publish(
                    "trade.opened", trade_id=f"T{n}", symbol="ETHUSDT", side="sell",
                    quantity="2", entry_price="3000",
                )  # fmt: skip
        await wait_for(lambda: worker.stats.committed == 2, what="two commits")

        def scraped() -> dict[str, float] | None:
            samples = _scrape(port)
            settled = samples.get("tradescribe_pending_entries{}") == 0
            return samples if settled and samples.get("tradescribe_lag_entries{}") == 0 else None

        samples = await wait_for(scraped, what="a scrape with the backlog after the commits")
    assert samples["tradescribe_events_committed_total{type=trade.opened}"] == 2
    assert samples["tradescribe_dead_letters_total{}"] == 0
    assert samples["tradescribe_pending_entries{}"] == 0
    assert samples["tradescribe_lag_entries{}"] == 0
    assert samples["tradescribe_db_bytes{}"] > 0
    assert samples["tradescribe_commit_ms_p99{}"] > 0
    with pytest.raises(URLError):  # the server is gone once the worker stopped
        _scrape(port)


async def test_metrics_port_in_use_is_one_clear_error(
    tmp_path: Path, redis_url: str, names: dict[str, str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        s = make_settings(tmp_path / "m.db", redis_url, names, metrics_port=port)
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            with anyio.fail_after(10):
                await run_worker(s, handle_signals=False)
