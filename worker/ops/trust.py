"""The channel key: which key the worker signs with, and which one a client checks with.

Order: ``channel_key`` (``TRADESCRIBE_CHANNEL_KEY``), else ``channel_key_file``,
else ``<db>.channel-key`` beside the database. A worker with none of them makes
that last file (64 random hex characters, mode 0600) on its first start and
keeps using it; ``status``/``ping``/``check``/``query`` on the same host, run as
the worker's user, read it from there. Elsewhere, give clients the same key.
A client that finds no key refuses to run rather than believe any answer.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from contracts.channelauth import ChannelKeyError, check_key, key_file_path, read_key_file

if TYPE_CHECKING:
    from worker.settings import Settings


def key_source(s: Settings) -> str:
    """Where the key comes from, for ``tradescribe config`` (never the key)."""
    if s.channel_key is not None:
        return "setting channel_key (or TRADESCRIBE_CHANNEL_KEY)"
    if s.channel_key_file is not None:
        return f"file {s.channel_key_file}"
    return f"file {key_file_path(s.db)} (made by the worker)"


def client_key(s: Settings) -> bytes:
    """The key a command run by a person checks replies and heartbeats with."""
    if s.channel_key is not None:
        return check_key(s.channel_key.get_secret_value(), "channel_key")
    if s.channel_key_file is not None:
        return read_key_file(s.channel_key_file)
    if s.database_url is not None:
        raise ChannelKeyError(_NO_FILE)
    beside = key_file_path(s.db)
    if beside.exists():
        return read_key_file(beside)
    raise ChannelKeyError(
        "no channel key, so the worker's replies and heartbeat cannot be verified: set "
        "TRADESCRIBE_CHANNEL_KEY or channel_key_file to the worker's key, or give --db / "
        f"TRADESCRIBE_DB of the worker on this host (its key is '<db>.channel-key'; "
        f"{beside} does not exist)"
    )


_NO_FILE = (
    "no channel key: with PostgreSQL there is no database file to keep one beside; set "
    "TRADESCRIBE_CHANNEL_KEY or channel_key_file (the same on the worker and its clients)"
)


def worker_key(s: Settings) -> bytes:
    """The key the worker signs with; made beside the database when none is configured."""
    if s.channel_key is not None or s.channel_key_file is not None:
        return client_key(s)
    if s.database_url is not None:
        raise ChannelKeyError(_NO_FILE)
    path = key_file_path(s.db)
    if not path.exists():
        _create_key_file(path)
    return read_key_file(path)


def _create_key_file(path: Path) -> None:
    """Write a fresh key to ``path`` atomically (mode 0600); a racing worker's file wins."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, (secrets.token_hex(32) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if it exists: never replace a key clients hold
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
