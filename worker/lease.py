"""Only one writer: a lock on the database file and a lease in Redis.

The file lock stops a second worker on the same host and file; the Redis lease
stops a second worker anywhere on the same stream and group. Either refusal
names the worker that holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from contracts.keys import stream_key
from contracts.redisclient import AsyncRedis
from worker.errors import AlreadyRunningError, LeaseLostError


def worker_identity(consumer: str) -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "consumer": consumer,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def describe_holder(raw: str | bytes | None) -> str:
    try:
        who = json.loads(raw or "{}")
        return f"pid {who['pid']} on {who['host']} (consumer {who['consumer']})"
    except (ValueError, KeyError, TypeError):
        return "an unknown process"


def _is_dead_local_process(raw: str | bytes) -> bool:
    """True if the lease holder ran on this host and its process is gone: no such pid,
    or a zombie (exited, not yet reaped by its parent), which holds no lock and
    writes nothing but still answers ``kill(pid, 0)``."""
    try:
        who = json.loads(raw)
        if who["host"] != socket.gethostname():
            return False
        pid = int(who["pid"])
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (ValueError, KeyError, TypeError, PermissionError):
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """``/proc/<pid>/stat`` says state Z (the state follows the ``(comm)`` field)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    fields = stat[stat.rfind(b")") + 1 :].split()
    return bool(fields) and fields[0] == b"Z"


class FileLock:
    """An exclusive ``flock`` on ``<db>.lock``; released when the process dies."""

    def __init__(self, db_path: Path, identity: dict[str, Any]) -> None:
        self.path = db_path.with_name(db_path.name + ".lock")
        self._identity = identity
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe_holder(os.pread(fd, 4096, 0))
            os.close(fd)
            raise AlreadyRunningError(
                f"another worker ({holder}) is writing to {self.path.with_suffix('')}; "
                "stop it first, or give this one another --db"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self._identity).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return false
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLease:
    """``SET key NX PX`` held by renewing it; lost if someone else holds the key."""

    def __init__(
        self, client: AsyncRedis, stream: str, group: str, identity: dict[str, Any], ttl_ms: int
    ) -> None:
        self.key = stream_key("lease", stream, group)
        self._what = f"group '{group}' of stream '{stream}'"
        self._client = client
        self._value = json.dumps(identity)
        self.ttl_ms = ttl_ms

    async def acquire(self) -> None:
        if await self._client.set(self.key, self._value, nx=True, px=self.ttl_ms):
            return
        holder = await self._client.get(self.key)
        if holder is not None and _is_dead_local_process(holder):
            # A worker on this host died (kill -9) before its lease expired: take over.
            if await self._client.eval(_TAKE_OVER, 1, self.key, holder, self._value, self.ttl_ms):
                return
            holder = await self._client.get(self.key)
        if holder is None:
            return await self.acquire()
        raise AlreadyRunningError(
            f"another worker ({describe_holder(holder)}) already consumes {self._what}; "
            f"stop it first (its lease {self.key} expires {self.ttl_ms} ms after it stops)"
        )

    async def renew(self) -> None:
        renewed = await self._client.eval(_RENEW, 1, self.key, self._value, self.ttl_ms)
        # Expired while we could not reach Redis: take it back if nobody else did.
        if not renewed and not await self._client.set(
            self.key, self._value, nx=True, px=self.ttl_ms
        ):
            holder = await self._client.get(self.key)
            raise LeaseLostError(
                f"the writer lease {self.key} is now held by {describe_holder(holder)}; "
                "this worker stops writing"
            )

    async def release(self) -> None:
        await self._client.eval(_RELEASE, 1, self.key, self._value)
