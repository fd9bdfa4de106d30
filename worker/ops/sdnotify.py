"""The systemd notify protocol, spoken directly over the ``NOTIFY_SOCKET`` datagram socket.

``READY=1`` once the database and the consumer group are ready, ``WATCHDOG=1``
every half ``WATCHDOG_USEC``, ``STATUS=`` with a one-line summary, and
``STOPPING=1`` when a stop begins. Outside systemd (no ``NOTIFY_SOCKET``) it
does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

import anyio

from worker.consume import Worker

log = logging.getLogger(__name__)

STATUS_INTERVAL_S = 10.0


class Notifier:
    def __init__(self, address: str | None) -> None:
        if address and address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace socket
        self.address = address

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Notifier:
        return cls(env.get("NOTIFY_SOCKET") or None)

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; False when it could not be sent."""
        if not self.address:
            return False
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self.address)
        except OSError as exc:
            log.warning("cannot notify systemd at %s: %s", self.address.lstrip("\0"), exc)
            return False
        return True


def watchdog_interval_s(env: Mapping[str, str] = os.environ) -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds, when the watchdog is meant for this process."""
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec), 1) / 2_000_000
    except ValueError:
        return None


def summary(worker: Worker) -> str:
    st = worker.stats
    line = f"committed {st.committed} events, {st.dead_letters} dead letters since start"
    if st.last_error:
        line += f"; last error: {st.last_error}"
    return line[:200]


async def notify_systemd(worker: Worker) -> None:
    """READY=1 when the worker is ready, then WATCHDOG=1 and STATUS= until cancelled."""
    notifier = Notifier.from_env()
    if not notifier.address:
        return
    await worker.ready.wait()
    notifier.send("READY=1", f"STATUS=ready; {summary(worker)}", f"MAINPID={os.getpid()}")
    interval = watchdog_interval_s()
    period = min(interval, STATUS_INTERVAL_S) if interval else STATUS_INTERVAL_S
    async with anyio.create_task_group() as tg:
        tg.start_soon(_notify_stopping, worker, notifier)
        while True:
            await anyio.sleep(period)
            # Once stopping, the status keeps saying so; the watchdog still beats.
            prefix = "stopping; " if worker.stopping else ""
            fields = [f"STATUS={prefix}{summary(worker)}"]
            if interval:
                fields.append("WATCHDOG=1")
            notifier.send(*fields)


async def _notify_stopping(worker: Worker, notifier: Notifier) -> None:
    await worker.wait_stopping()
    notifier.send("STOPPING=1", f"STATUS=stopping; {summary(worker)}")
