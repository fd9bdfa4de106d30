"""Proof that a reply or a heartbeat comes from the worker: HMAC-SHA256 with a shared key.

Anyone who can reach Redis can subscribe to the request channel and LPUSH onto a
reply key, or SET the heartbeat key. So the worker signs what it writes with a
key only it and its clients hold, and clients refuse what does not verify.

A signed document is the JSON object the worker would have written, with the
signature as its first member::

    {"sig":"<64 hex>",<the rest of the object>

The signed text is ``{`` followed by everything after ``"sig":"<64 hex>",``,
byte for byte, so a client in any language can check it without
re-serialising JSON. The HMAC also covers what the text answers, so a genuine
reply cannot be replayed to another request, nor a heartbeat to another group:

- a reply: ``tradescribe-reply\\n<request id>\\n<command>\\n<reply_to>\\n<text>``
  (the reply key is 32 random hex characters the client chose: a nonce);
- a heartbeat: ``tradescribe-heartbeat\\n<heartbeat key>\\n<text>``, whose
  ``at`` (Unix time) the checker compares with its clock, so an old beat set
  again is refused as old.

Where the key comes from: see :func:`load_key` and ``docs/faults-and-security.md``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from pathlib import Path

from contracts.errors import TradescribeError

KEY_ENV = "TRADESCRIBE_CHANNEL_KEY"
KEY_FILE_ENV = "TRADESCRIBE_CHANNEL_KEY_FILE"
MIN_KEY_CHARS = 16
_SIGNED = re.compile(r'\{"sig":"([0-9a-f]{64})",(.*)', re.DOTALL)


class ChannelKeyError(TradescribeError):
    """No usable channel key: replies and heartbeats cannot be verified."""


def key_file_path(db: str | Path) -> Path:
    """Where a worker without a configured key keeps the one it made: beside its database."""
    return Path(f"{db}.channel-key")


def read_key_file(path: Path) -> bytes:
    """The key in ``path`` (surrounding whitespace ignored); ChannelKeyError if unusable."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ChannelKeyError(
            f"cannot read the channel key file {path}: {exc.strerror or exc} "
            "(give this user read access, or set TRADESCRIBE_CHANNEL_KEY)"
        ) from None
    return check_key(text, f"the channel key in {path}")


def check_key(text: str, what: str) -> bytes:
    if len(text) < MIN_KEY_CHARS:
        raise ChannelKeyError(
            f"{what} is too short ({len(text)} characters, at least {MIN_KEY_CHARS}); "
            "make one with: python3 -c 'import secrets; print(secrets.token_hex(32))'"
        )
    return text.encode()


def load_key(key: str | bytes | None = None, key_file: str | Path | None = None) -> bytes:
    """The key a client verifies with: ``key``, else ``key_file``, else
    ``$TRADESCRIBE_CHANNEL_KEY``, else the file named by ``$TRADESCRIBE_CHANNEL_KEY_FILE``.

    Raises ``ChannelKeyError`` when there is none: a client that cannot verify
    would have to believe whoever answers first.
    """
    if key is not None:
        return check_key(key.decode() if isinstance(key, bytes) else key, "the channel key")
    if key_file is not None:
        return read_key_file(Path(key_file))
    if os.environ.get(KEY_ENV):
        return check_key(os.environ[KEY_ENV], KEY_ENV)
    if os.environ.get(KEY_FILE_ENV):
        return read_key_file(Path(os.environ[KEY_FILE_ENV]))
    raise ChannelKeyError(
        "no channel key, so the worker's replies cannot be told from forged ones: set "
        f"{KEY_ENV} or {KEY_FILE_ENV} (the worker's key; without one configured, the "
        "worker keeps it in '<database>.channel-key' beside its database)"
    )


def _mac(key: bytes, header: str, text: str) -> str:
    return hmac.new(key, f"{header}\n{text}".encode(), hashlib.sha256).hexdigest()


def reply_header(request_id: str, command: str, reply_to: str) -> str:
    return f"tradescribe-reply\n{request_id}\n{command}\n{reply_to}"


def heartbeat_header(heartbeat_key: str) -> str:
    return f"tradescribe-heartbeat\n{heartbeat_key}"


def sign(key: bytes, header: str, text: str) -> str:
    """``text`` (a JSON object) with its signature for ``header`` as first member."""
    if not text.startswith("{") or text == "{}":
        raise ValueError("only a non-empty JSON object can be signed")
    return f'{{"sig":"{_mac(key, header, text)}",{text[1:]}'


def verify(key: bytes, header: str, signed: str) -> str | None:
    """The signed JSON text without its signature, or None if it is unsigned or forged."""
    found = _SIGNED.fullmatch(signed)
    if found is None:
        return None
    text = "{" + found.group(2)
    if not hmac.compare_digest(found.group(1), _mac(key, header, text)):
        return None
    return text
