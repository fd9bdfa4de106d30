"""Redis URLs as people may see them: never with the password."""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit


def mask_url(url: str) -> str:
    """``redis://user:secret@host:6379/0`` -> ``redis://user:***@host:6379/0``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` in it (for a client built in memory, never for display).

    Raises ValueError if ``url`` already holds a password."""
    parts = urlsplit(url)
    if parts.password is not None:
        raise ValueError("the Redis password is given twice: in the URL and as a setting")
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))
