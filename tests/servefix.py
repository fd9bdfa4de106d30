"""``tradescribe serve`` as a real child process on a free port, and a small HTTP
client (urllib) for the tests of the HTTP door."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from worker.http.tokens import TokenStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def http(
    url: str,
    token: str | None = None,
    *,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        request.add_header(k, v)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return Reply(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode())
    except urllib.error.HTTPError as e:
        return Reply(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode())


class ServeProcess:
    """Started when uvicorn says it listens (its own log line), not after a sleep."""

    def __init__(self, db: Path | str | None, tokens: Path, log: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRADESCRIBE_")}
        if "TRADESCRIBE_CHANNEL_KEY" in os.environ:  # the suite's workers sign with it
            env["TRADESCRIBE_CHANNEL_KEY"] = os.environ["TRADESCRIBE_CHANNEL_KEY"]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "serve", *(["--db", str(db)] if db else []),
             "--tokens", str(tokens), "--port", str(self.port), *extra],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._copy_log, daemon=True)
        self.reader.start()
        if not self.ready.wait(30) or self.process.poll() is not None:
            self.stop()
            raise AssertionError(f"serve did not start: {log.read_text()}")

    def _copy_log(self) -> None:
        assert self.process.stdout is not None
        with self.log.open("ab") as out:
            for line in self.process.stdout:
                out.write(line)
                out.flush()
                if b"Uvicorn running on" in line:
                    self.ready.set()
            self.ready.set()  # exited: the caller sees it did not start

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.reader.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def serve_process(tmp_path: Path, redis_url: str) -> Iterator[Any]:
    """Starts ``serve``; on the suite's redis-server unless told another (never the
    default localhost:6379 that the settings would otherwise give it)."""
    started: list[ServeProcess] = []

    def start(db: Path, tokens: Path, *extra: str) -> ServeProcess:
        if "--redis-url" not in extra:
            extra = (*extra, "--redis-url", redis_url)
        proc = ServeProcess(db, tokens, tmp_path / f"serve-{len(started)}.log", *extra)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def token(path: Path, name: str, *accounts: str, **kw: Any) -> str:
    secret, _ = TokenStore(path).create(name, list(accounts), kw.pop("sources", []), **kw)
    return secret
