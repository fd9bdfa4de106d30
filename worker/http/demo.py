"""The dashboard of ``tradescribe demo``: the same app as ``serve``, in the demo's
own event loop, on 127.0.0.1 (port 8470, or a free one when that is taken),
with an admin token made for the demo's database."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from anyio.abc import TaskStatus

from contracts.channelauth import key_file_path, read_key_file
from worker.http.app import ServeConfig, create_app
from worker.http.tokens import TokenStore, default_path

HOST = "127.0.0.1"


class _InLoopServer(uvicorn.Server):
    """Uvicorn without its own signal handlers: the demo's Ctrl-C stays the demo's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listen(port: int) -> socket.socket:
    """A listening socket on ``port``, or on a free port when that one is taken."""
    for candidate in (port, 0):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, candidate))
        except OSError:
            sock.close()
            continue
        sock.listen(128)
        return sock
    raise OSError(f"no free port on {HOST}")


class DemoDashboard:
    def __init__(self, db: Path, redis_url: str | None, stream: str, port: int) -> None:
        self.tokens = default_path(db)
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(str(self.tokens) + suffix).unlink()
        self.token, _ = TokenStore(self.tokens).create("demo", [], [], admin=True)
        self.db = db
        self.redis_url = redis_url
        self.stream = stream
        self.socket = listen(port)
        self.url = f"http://{HOST}:{self.socket.getsockname()[1]}/"
        self._server: uvicorn.Server | None = None
        self._watch: Any = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until :meth:`stop`; ``started`` as soon as the socket listens."""
        beside = key_file_path(self.db)  # the demo's worker made it at its start
        key = read_key_file(beside) if beside.exists() else None
        config = ServeConfig(self.db, self.tokens, redis_url=self.redis_url, stream=self.stream,
                             group="demo", channel_key=key)  # fmt: skip
        app, server = create_app(config)
        self._watch = server.watch
        self._server = _InLoopServer(uvicorn.Config(app, log_level="warning", access_log=False,
                                                    timeout_graceful_shutdown=2))  # fmt: skip
        task_status.started()
        try:
            await self._server.serve(sockets=[self.socket])
        finally:
            self.socket.close()

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.closing = True
        if self._server is not None:
            self._server.should_exit = True


def serve_until_interrupted(db: Path, dashboard: dict[str, str], console: Any) -> None:
    """``demo --keep-serving``: the dashboard again, on the same address, until Ctrl-C."""
    sock = listen(int(dashboard["url"].rstrip("/").rsplit(":", 1)[1]))
    url = f"http://{HOST}:{sock.getsockname()[1]}/"  # listening already: the line is true
    console.print(f"serving {url} (token {dashboard['token']}); Ctrl-C stops", soft_wrap=True)
    app, _ = create_app(ServeConfig(db=db, tokens=default_path(db)))
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
