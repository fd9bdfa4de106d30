"""``tradescribe serve``: the JSON API, tokens and tenancy, the live stream.

One seeded database (tests/querydata.py: bot-a on ACC-1, bot-b on ACC-2) served
by a real ``tradescribe serve`` process; requests go over real HTTP.
"""

from __future__ import annotations

import csv
import datetime as dt
import http.client as httpclient
import io
import json
import os
import re
import signal
import sqlite3
import ssl
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme

from contracts import AsyncPublisher
from tests.helpers import make_settings, running_worker, wait_for
from tests.helpers import tradescribe as _tradescribe
from tests.querydata import at, seeded, stored_events
from tests.servefix import ServeProcess, http, serve_process, token
from worker.cli.query import fetch
from worker.embedded import EmbeddedRedis
from worker.http.reads import clean
from worker.settings import Settings

__all__ = ["serve_process"]  # the fixture, for the tests below

# What only bot-a / ACC-1 has: none of it may reach a token for ACC-2.
TENANT_A_MARKERS = ("bot-a", "ACC-1", "XAUUSD", "ETHUSDT", "SOLUSDT", "closed T2 at 110",
                    "morning plan", "1250")  # fmt: skip
PARAMS = {"date": "2026-11-18", "trade_id": "T2", "since": "2025-01-01", "until": "2026-12-31",
          "start_date": "2025-01-01", "end_date": "2026-12-31"}  # fmt: skip

tradescribe = partial(_tradescribe, columns=200, channel_key=True)


@dataclass
class Site:
    settings: Settings
    tokens: Path
    url: str
    admin: str
    a: str
    b: str

    def get(self, path: str, who: str | None, **params: Any) -> Any:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return http(f"{self.url}{path}{'?' + query if query else ''}", who)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, redis_server: EmbeddedRedis) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("serve")
    tag = uuid.uuid4().hex[:10]
    names = {"stream": f"test:{tag}:events", "group": f"g-{tag}", "consumer": f"c-{tag}"}
    settings = make_settings(tmp / "scribe.db", redis_server.url, names)
    anyio.run(seeded, settings)
    tokens = tmp / "tokens.db"
    secrets = {
        "admin": token(tokens, "admin", admin=True),
        "a": token(tokens, "tenant-a", "ACC-1"),
        "b": token(tokens, "tenant-b", "ACC-2"),
    }
    proc = ServeProcess(settings.db, tokens, tmp / "serve.log", "--redis-url", redis_server.url,
                        "--stream", names["stream"], "--group", names["group"])  # fmt: skip
    try:
        yield Site(settings, tokens, proc.url, **secrets)
    finally:
        proc.stop()


def get_paths(site: Site) -> list[tuple[str, list[str]]]:
    doc = site.get("/api/openapi.json", site.admin).json()
    return [
        (path, [p["name"] for p in ops["get"].get("parameters", [])])
        for path, ops in doc["paths"].items()
        if "get" in ops and path != "/api/v1/events/stream"
    ]


def test_every_route_answers_401_without_a_valid_token(site: Site, serve_process: Any) -> None:
    paths = [p for p, _ in get_paths(site)]
    assert len(paths) >= 12 + 4
    paths += ["/api/openapi.json", "/api/v1/events/stream", "/api/docs"]
    for path in paths:
        reply = site.get(path, None)
        assert reply.status == 401, path
        assert "token" in reply.json()["error"], path
    # a wrong token counts as a failed login: its own server, under the limit
    proc: ServeProcess = serve_process(site.settings.db, site.tokens)
    for path in paths[:9]:
        assert http(proc.url + path, "tsk_not-a-token").status == 401, path
    assert http(f"{site.url}/", None).status == 200  # the login page, after a redirect


def test_each_query_answers_what_query_json_prints(site: Site) -> None:
    cases = [("active-trades", {}), ("history", {"symbol": "btc", "limit": 10}),
             ("calendar", {"since": "2026-11-01", "until": "2026-11-30", "tz": "Europe/Berlin"}),
             ("daily-loss", {"date": "2026-11-18"}), ("pnl", {"tz": "Asia/Kolkata"}),
             ("trade", {"trade_id": "T2", "source": "bot-a"}), ("plugins", {}),
             ("strategies", {"account": "ACC-1"}), ("journal", {"date": "2026-11-16"}),
             ("positions", {}), ("active-signals", {}),
             ("closed-today", {"kind": "signals"})]  # fmt: skip
    for name, params in cases:
        reply = site.get(f"/api/v1/{name}", site.admin, **params)
        assert reply.status == 200, reply.text
        expected = clean(fetch(name, dict(params), site.settings.db))
        got = reply.json()
        if name in ("pnl", "closed-today"):  # "today" moves; compare the shape
            assert got["columns"] == expected["columns"]
            assert got.keys() == expected.keys()
        else:
            assert got == expected, name


def test_bad_filters_answer_400_with_the_query_layers_message(site: Site) -> None:
    reply = site.get("/api/v1/history", site.admin, tz="Mars/Olympus")
    assert reply.status == 400
    assert "unknown time zone 'Mars/Olympus'" in reply.json()["error"]
    reply = site.get("/api/v1/pnl", site.admin, limit=3)
    assert reply.status == 400
    assert "does not take limit" in reply.json()["error"]


def test_seed_002_routes_have_their_fields(site: Site) -> None:
    trades = site.get("/api/trades", site.a, start_date="2026-01-01").json()
    assert {t["id"] for t in trades} == {"T2", "T3", "T4"}
    t2 = next(t for t in trades if t["id"] == "T2")
    assert t2 | {"entry_time": None, "exit_time": None} == {
        "id": "T2", "source": "bot-a", "account": "ACC-1", "symbol": "BTCUSDT",
        "entry_time": None, "exit_time": None, "entry_price": 100.0, "exit_price": 110.0,
        "quantity": 2.0, "pnl": 20.0, "type": "BUY", "is_profit": True,
        "exit_type": "take_profit"}  # fmt: skip
    cumulative = site.get("/api/cumulative-pnl", site.a).json()
    assert cumulative["all_time"] == 80.0
    assert cumulative["trades"]["all_time"] == 3
    assert set(cumulative) >= {"all_time", "year", "month", "week", "day"}
    stats = site.get("/api/daily-stats", site.a, date="2026-11-18").json()
    assert [(s["broker_id"], s["loss_used"], s["loss_limit"], s["percentage"]) for s in stats] == [
        ("ACC-1", 1250.0, 5000.0, 25.0)
    ]
    calendar = site.get("/api/pnl-calendar", site.a, start_date="2026-11-01",
                        end_date="2026-11-30").json()  # fmt: skip
    assert calendar == {"2026-11-12": -40.0, "2026-11-17": 20.0}


def test_bots_agree_with_each_bots_history_and_active_trades(site: Site) -> None:
    bots = site.get("/api/v1/bots", site.admin).json()["rows"]
    assert [b["source"] for b in bots] == ["bot-a", "bot-b"]
    for bot in bots:
        summary = site.get("/api/v1/history", site.admin, source=bot["source"]).json()["summary"]
        active = site.get("/api/v1/active-trades", site.admin, source=bot["source"]).json()
        assert (bot["trades"], bot["win_rate"], bot["net"], bot["profit_factor"]) == (
            summary["count"],
            summary["win_rate"],
            summary["net"],
            summary["profit_factor"],
        )
        assert bot["open_trades"] == len(active["rows"])
    a = bots[0]
    assert (a["trades"], a["net"], a["open_trades"], a["open_positions"]) == (3, 80.0, 1, 1)
    assert a["last_activity"] == "2026-11-18T09:00:00.000000Z"  # T1 opened after T2 closed
    assert site.get("/api/v1/bots", site.b).json()["rows"] == [bots[1]]


def test_bots_from_trade_months_agree_with_trade_days(site: Site, tmp_path: Path) -> None:
    """The bot table sums trade_months (and finds the last day in the last month); on a
    file without that table (before schema 5) it sums trade_days: the same rows."""
    from worker.http.reads import bots as bot_rows
    from worker.http.tokens import Principal

    older = tmp_path / "older.db"
    source = sqlite3.connect(f"file:{site.settings.db}?mode=ro", uri=True)
    target = sqlite3.connect(older)
    source.backup(target)
    source.close()
    target.execute("DROP TABLE trade_months")
    target.commit()
    target.close()
    for who in (Principal("x", "admin", (), (), False, True),
                Principal("y", "a", ("ACC-1",), (), False, False),
                Principal("z", "b", ("ACC-2",), ("bot-b",), False, False)):  # fmt: skip
        rows = bot_rows(site.settings.db, who, {})
        assert rows, who
        assert rows == bot_rows(older, who, {}), who


def test_format_csv_gives_the_rows_as_csv(site: Site) -> None:
    reply = site.get("/api/v1/history", site.a, format="csv")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(reply.text)))
    assert sorted(r["trade_id"] for r in rows) == ["T2", "T3", "T4"]
    seed_csv = site.get("/api/trades", site.a, format="csv").text
    assert seed_csv.splitlines()[0].startswith("id,source,account,symbol")


# Samoa moved across the date line: 2011-12-29 23:59:59 (-10:00) was followed by
# 2011-12-31 00:00 (+14:00), at 10:00 UTC on the 30th. Its 30th never began.
APIA_TRADES = [("A1", "2011-12-29T09:00", "101"), ("A2", "2011-12-29T12:00", "99"),
               ("A3", "2011-12-30T09:59", "103"), ("A4", "2011-12-30T10:30", "96")]  # fmt: skip


async def _publish_apia_trades(settings: Settings) -> None:
    async with running_worker(settings):
        async with AsyncPublisher(settings.redis_url, source="bot-s", account="ACC-S",
                                  stream=settings.stream) as pub:  # fmt: skip
            for trade_id, closed, exit_price in APIA_TRADES:
                await pub.publish("trade.opened", ts=at(closed) - dt.timedelta(hours=1),
                                  trade_id=trade_id, symbol="BTCUSDT", side="buy",
                                  quantity="1", entry_price="100")  # fmt: skip
                await pub.publish("trade.closed", ts=at(closed), trade_id=trade_id,
                                  exit_price=exit_price)  # fmt: skip
        await wait_for(lambda: stored_events(settings) == 2 * len(APIA_TRADES),
                       what="the Samoa trades committed")  # fmt: skip


def test_a_calendar_over_samoas_skipped_day_answers_its_days(
    tmp_path: Path, redis_url: str, names: dict[str, str], serve_process: Any
) -> None:
    """A calendar in Pacific/Apia over 2011-12-30, the day that never began there,
    answers 200 (it was 500: ValueError) on every route that makes one: the skipped day
    holds no trade, each trade is on the local day of its close."""
    settings = make_settings(tmp_path / "samoa.db", redis_url, names)
    anyio.run(_publish_apia_trades, settings)
    tokens = tmp_path / "tokens.db"
    secret = token(tokens, "samoa", "ACC-S")
    proc: ServeProcess = serve_process(settings.db, tokens)
    apia = "tz=Pacific/Apia"
    skipped = http(f"{proc.url}/api/v1/calendar?{apia}&since=2011-12-30&until=2011-12-30", secret)
    assert skipped.status == 200, skipped.text
    assert skipped.json()["rows"] == []
    assert skipped.json()["summary"]["days_traded"] == 0
    around = http(f"{proc.url}/api/v1/calendar?{apia}&since=2011-12-28&until=2011-12-31", secret)
    assert around.status == 200, around.text
    # 09:00Z is 23:00 on the 28th, 12:00Z and 09:59Z the 29th (-10:00), 10:30Z the 31st
    assert [(r["date"], r["trades"], r["pnl"]) for r in around.json()["rows"]] == [
        ("2011-12-28", 1, 1.0), ("2011-12-29", 2, 2.0), ("2011-12-31", 1, -4.0)]  # fmt: skip
    seed_range = "start_date=2011-12-30&end_date=2011-12-30"
    for path in (f"/api/pnl-calendar?{seed_range}", f"/api/pnl-calendar?{seed_range}&format=csv",
                 "/api/v1/calendar?since=2011-12-30&until=2011-12-30&format=csv"):  # fmt: skip
        reply = http(f"{proc.url}{path}&{apia}", secret)
        assert reply.status == 200, (path, reply.text)
    seed_days = http(f"{proc.url}/api/pnl-calendar?{apia}&start_date=2011-12-29"
                     "&end_date=2011-12-31", secret)  # fmt: skip
    assert seed_days.json() == {"2011-12-29": 2.0, "2011-12-31": -4.0}


def test_a_tenant_never_sees_another_tenants_data_on_any_route(site: Site) -> None:
    leaks_for_admin = compared = 0
    for path, names in get_paths(site):
        params = {k: v for k, v in PARAMS.items() if k in names}
        for extra in ({}, {"account": "ACC-1"}, {"source": "bot-a"}):
            extra = {k: v for k, v in extra.items() if k in names}
            for fmt in ("json", "csv") if "format" in names else ("json",):
                reply = site.get(path, site.b, **params, **extra, format=fmt)
                seen = [m for m in TENANT_A_MARKERS if m in reply.text]
                assert not seen, (path, extra, fmt, seen, reply.text[:300])
        admin = site.get(path, site.admin, **params).text
        leaks_for_admin += any(m in admin for m in TENANT_A_MARKERS)
        if "account" in names and "today" not in admin:
            # numbers too: B's answer is exactly the admin's for account ACC-2
            own = site.get(path, site.admin, **params, account="ACC-2").json()
            assert site.get(path, site.b, **params).json() == own, path
            compared += 1
    # the same requests do carry tenant A's data for a token that may see it
    assert leaks_for_admin >= 10
    assert compared >= 10


def test_another_tenants_trade_answers_404_like_a_missing_one(site: Site) -> None:
    theirs = site.get("/api/v1/trade", site.b, trade_id="T2")
    missing = site.get("/api/v1/trade", site.b, trade_id="T9")
    assert theirs.status == missing.status == 404
    assert theirs.text.replace("T2", "T9") == missing.text
    assert site.get("/api/v1/trade", site.a, trade_id="T2").status == 200


def test_dead_letters_and_pipeline_health_are_for_admins(site: Site) -> None:
    assert site.get("/api/v1/dead-letters", site.b).status == 403
    assert site.get("/api/v1/dead-letters", site.admin).status == 200
    bad = site.get("/api/v1/dead-letters?limit=abc", site.admin)
    assert bad.status == 400
    assert "limit must be a whole number" in bad.json()["error"]
    assert "dead_letters" not in site.get("/api/v1/health", site.b).json()
    health = site.get("/api/v1/health", site.admin).json()
    assert health["dead_letters"] == 0
    assert health["schema_version"] >= 5
    b_health = site.get("/api/v1/health", site.b).json()
    assert b_health["events"] == 3
    assert health["events"] > b_health["events"]
    assert "pipeline" not in b_health
    assert health["pipeline"]["ok"] is False  # no worker runs now: tradescribe check's reason
    assert "no heartbeat" in health["pipeline"]["reasons"][0]


def test_responses_carry_csp_and_values_are_not_html(site: Site) -> None:
    for path in ("/login", "/api/v1/pnl", "/static/dashboard.js", "/api/v1/nothing"):
        reply = site.get(path, site.a)
        assert reply.headers["content-security-policy"].startswith("default-src 'self'"), path
        assert reply.headers["x-content-type-options"] == "nosniff"
    js = site.get("/static/dashboard.js", None).text
    assert "innerHTML" not in js
    assert "insertAdjacentHTML" not in js
    assert "eval(" not in js
    page = site.get("/api/docs", site.a).text
    assert "http://" not in page.replace("http://www.w3.org", "")
    assert "https://" not in page


def login(url: str, secret: str) -> tuple[int, dict[str, str]]:
    conn = httpclient.HTTPConnection(url.removeprefix("http://"), timeout=10)
    conn.request("POST", "/login", body=f"token={secret}",
                 headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    response = conn.getresponse()
    headers = {k.lower(): v for k, v in response.getheaders()}
    response.read()
    conn.close()
    return response.status, headers


def test_login_sets_an_httponly_samesite_strict_session(site: Site) -> None:
    status, headers = login(site.url, site.b)
    assert status == 303
    assert headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie.replace("Strict", "strict")
    session = cookie.split(";")[0]
    whoami = http(f"{site.url}/api/v1/whoami", headers={"Cookie": session}).json()
    assert whoami["name"] == "tenant-b"
    assert whoami["accounts"] == ["ACC-2"]
    page = http(f"{site.url}/", headers={"Cookie": session})
    assert page.status == 200
    assert 'id="widget-pnl"' in page.text
    status, headers = login(site.url, "tsk_wrong")
    assert status == 303
    assert headers["location"] == "/login?failed=1"
    assert "set-cookie" not in headers


def test_failed_logins_are_rate_limited(tmp_path: Path, site: Site, serve_process: Any) -> None:
    proc: ServeProcess = serve_process(site.settings.db, site.tokens)
    statuses = [login(proc.url, f"tsk_guess{i}")[0] for i in range(12)]
    assert statuses[:10] == [303] * 10
    assert statuses[10:] == [429, 429]
    # while blocked, even the right token waits: guessing gains nothing
    assert login(proc.url, site.a)[0] == 429
    assert http(f"{proc.url}/api/v1/pnl", site.a).status == 429


def test_a_revoked_token_stops_at_its_next_request(site: Site) -> None:
    secret = token(site.tokens, f"short-lived-{uuid.uuid4().hex[:6]}", "ACC-1")
    assert site.get("/api/v1/pnl", secret).status == 200
    listed = tradescribe("token", "list", "--tokens", site.tokens, "--json")
    assert secret not in listed.stdout
    assert "sha256" not in listed.stdout
    name = next(t["name"] for t in json.loads(listed.stdout) if t["name"].startswith("short"))
    assert tradescribe("token", "revoke", name, "--tokens", site.tokens).returncode == 0
    assert site.get("/api/v1/pnl", secret).status == 401


def test_token_create_prints_the_token_once_and_keeps_its_hash(tmp_path: Path) -> None:
    tokens = tmp_path / "t.db"
    done = tradescribe("token", "create", "--name", "n", "--account", "A", "--tokens", tokens)
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip()
    assert secret.startswith("tsk_")
    assert len(secret) > 40
    assert secret.encode() not in tokens.read_bytes()
    again = tradescribe("token", "create", "--name", "n", "--account", "A", "--tokens", tokens)
    assert again.returncode == 1
    assert "exists" in again.stderr


def test_serve_refuses_a_db_in_a_folder_that_does_not_exist(tmp_path: Path) -> None:
    done = tradescribe("serve", "--db", tmp_path / "typo" / "x.db")
    assert done.returncode == 1
    assert "the folder of --db" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_refuses_plain_http_on_a_public_address(tmp_path: Path) -> None:
    done = tradescribe("serve", "--db", tmp_path / "x.db", "--host", "0.0.0.0")
    assert done.returncode == 1
    assert "--tls-cert" in done.stderr
    assert "--insecure-bind" in done.stderr


def read_stream(url: str, secret: str, stop: threading.Event, out: list[dict[str, Any]]) -> None:
    """Collect ``commit`` messages from the live stream until ``stop`` is set."""
    conn = httpclient.HTTPConnection(url.removeprefix("http://"), timeout=20)
    conn.request("GET", "/api/v1/events/stream", headers={"Authorization": f"Bearer {secret}"})
    response = conn.getresponse()
    assert response.status == 200
    kind = ""
    while not stop.is_set():
        line = response.readline().decode()
        if not line:  # the server ended the stream
            out.append({"end": True})
            break
        if line.startswith("event: "):
            kind = line[7:].strip()
            if kind == "hello":
                out.append({"hello": True})
        elif line.startswith("data: ") and kind == "commit":
            out.append(json.loads(line[6:]))
    conn.close()


async def test_live_stream_carries_only_the_tokens_tenants(site: Site) -> None:
    name = f"revoked-{uuid.uuid4().hex[:6]}"
    secrets = {"b": site.b, "admin": site.admin, "revoked": token(site.tokens, name, "ACC-2")}
    streams: dict[str, list[dict[str, Any]]] = {who: [] for who in secrets}
    stop = threading.Event()
    threads = [threading.Thread(target=read_stream, daemon=True,
                                args=(site.url, secrets[who], stop, out))
               for who, out in streams.items()]  # fmt: skip
    for t in threads:
        t.start()
    await wait_for(lambda: all(streams.values()), what="the streams open")
    assert tradescribe("token", "revoke", name, "--tokens", site.tokens).returncode == 0
    async with running_worker(site.settings):
        for source, account in (("bot-a", "ACC-1"), ("bot-b", "ACC-2")):
            async with AsyncPublisher(site.settings.redis_url, source=source, account=account,
                                      stream=site.settings.stream) as pub:  # fmt: skip
                await pub.publish("journal.entry", text=f"live from {source}")
        await wait_for(lambda: any(e.get("source") == "bot-b" for e in streams["b"]),
                       what="bot-b's commit on tenant B's stream")  # fmt: skip
        await wait_for(lambda: len(streams["admin"]) >= 3, what="both commits on the admin's")
        await wait_for(lambda: streams["revoked"][-1] == {"end": True}, what="the stream ended")
        health = site.get("/api/v1/health", site.b).json()  # the tally counts the new one
        assert health["events"] == 4
        assert health["events_by_type"]["journal.entry"] == 1
        pipeline = site.get("/api/v1/health", site.admin).json()["pipeline"]
        assert pipeline["ok"] is True
        assert pipeline["heartbeat"]["worker_id"]
    stop.set()
    assert [e["source"] for e in streams["b"][1:]] == ["bot-b"]
    assert [e["source"] for e in streams["admin"][1:]] == ["bot-a", "bot-b"]
    assert all("ACC-1" not in json.dumps(e) for e in streams["b"])
    assert streams["revoked"] == [{"hello": True}, {"end": True}]  # ended, nothing sent


def test_demo_serves_its_dashboard_and_keep_serving_holds_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADESCRIBE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "demo", "--seconds", "1", "--db",
         str(tmp_path / "demo.db"), "--port", "0", "--keep-serving"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        lines = []
        for line in proc.stdout:  # ends at the serving line (or at exit, failing below)
            lines.append(line)
            if line.startswith("serving "):
                break
        output = "".join(lines)
        assert "dashboard: http://127.0.0.1:" in output
        assert "What the database holds" in output
        found = re.search(r"serving (http://\S+) \(token (tsk_\S+)\)", output)
        assert found, output
        url, secret = found.group(1).rstrip("/"), found.group(2)
        pnl = http(f"{url}/api/v1/pnl", secret)
        assert pnl.status == 200
        assert pnl.json()["rows"][0]["trades"] > 0
        assert http(f"{url}/api/v1/pnl", None).status == 401
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(15)
        proc.stdout.close()


def test_over_tls_the_session_cookie_is_secure(
    tmp_path: Path, site: Site, serve_process: Any
) -> None:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    proc: ServeProcess = serve_process(site.settings.db, site.tokens, "--tls-cert", str(cert),
                                       "--tls-key", str(key))  # fmt: skip
    context = ssl.create_default_context()
    ca.configure_trust(context)
    conn = httpclient.HTTPSConnection("127.0.0.1", proc.port, context=context, timeout=10)
    conn.request("POST", "/login", body=f"token={site.b}",
                 headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    response = conn.getresponse()
    response.read()
    cookie = response.getheader("set-cookie") or ""
    conn.close()
    assert response.status == 303
    assert "Secure" in cookie
    assert "HttpOnly" in cookie


def test_without_a_named_redis_serve_never_talks_to_redis(tmp_path: Path, site: Site) -> None:
    proc = ServeProcess(site.settings.db, site.tokens, tmp_path / "serve.log")
    try:
        pipeline = http(f"{proc.url}/api/v1/health", site.admin).json()["pipeline"]
        assert pipeline == {"ok": None, "reasons": ["no --redis-url: the pipeline cannot be asked"]}
        publisher = token(site.tokens, f"pub-{uuid.uuid4().hex[:6]}", "ACC-2", sources=["bot-b"],
                          publish=True)  # fmt: skip
        body = {"type": "journal.entry", "data": {"text": "hello"}}
        reply = http(f"{proc.url}/api/v1/events", publisher, method="POST", body=body)
        assert reply.status == 503
        assert "no --redis-url" in reply.json()["error"]
    finally:
        proc.stop()


def test_clean_rounds_every_float_at_any_depth_and_leaves_the_rest() -> None:
    class Price(float):
        pass

    value = {"a": 0.1 + 0.2, "b": [1, True, None, "x", -1e-12, {"c": float("inf")}],
             "d": Price(-103.78499999999985), "e": (0.1 + 0.2,)}  # fmt: skip
    got = clean(value)
    assert got == {"a": 0.3, "b": [1, True, None, "x", 0.0, {"c": None}], "d": -103.785,
                   "e": (0.1 + 0.2,)}  # fmt: skip
    assert str(got["b"][4]) == "0.0"  # never -0.0
    assert type(got["b"][1]) is bool
