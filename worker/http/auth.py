"""Who is asking: a Bearer token or the session cookie a login with one set.

Failed attempts (a bad login or a bad Bearer token) are counted per client
address; past ``max_failures`` in ``window_s`` that address gets 429 until the
window has passed.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from starlette.requests import Request

from worker.http.tokens import Principal, TokenStore

SESSION_COOKIE = "tradescribe_session"


@dataclass
class RateLimit:
    max_failures: int = 10
    window_s: float = 60.0
    max_addresses: int = 100_000  # past this, forget the addresses whose window has passed
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, who: str) -> deque[float]:
        seen = self._failures.setdefault(who, deque())
        cutoff = time.monotonic() - self.window_s
        while seen and seen[0] < cutoff:
            seen.popleft()
        if not seen:
            del self._failures[who]
            return deque()
        return seen

    def blocked_for(self, who: str) -> float:
        """Seconds until ``who`` may try again (0: now)."""
        seen = self._recent(who)
        if len(seen) < self.max_failures:
            return 0.0
        return max(0.0, seen[0] + self.window_s - time.monotonic())

    def failed(self, who: str) -> None:
        if len(self._failures) >= self.max_addresses:
            for address in list(self._failures):
                self._recent(address)
        self._failures.setdefault(who, deque()).append(time.monotonic())


@dataclass
class Sessions:
    """Browser sessions in memory: session id -> the token it logged in with.
    A restart of the server logs everyone out (the token still works)."""

    ttl_s: float = 12 * 3600
    _by_id: dict[str, tuple[str, float]] = field(default_factory=dict)

    def open(self, token: str) -> str:
        now = time.monotonic()
        for old in [k for k, (_, until) in self._by_id.items() if until < now]:
            del self._by_id[old]
        session = secrets.token_urlsafe(32)
        self._by_id[session] = (token, time.monotonic() + self.ttl_s)
        return session

    def token(self, session: str) -> str | None:
        found = self._by_id.get(session)
        if found is None:
            return None
        if found[1] < time.monotonic():
            del self._by_id[session]
            return None
        return found[0]

    def close(self, session: str) -> None:
        self._by_id.pop(session, None)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def authenticate(request: Request, tokens: TokenStore, sessions: Sessions) -> Principal | None:
    """The principal behind the request's Bearer token or session cookie, or None.
    A revoked token stops working for its sessions too (looked up on every request)."""
    token = bearer(request)
    if token is None:
        session = request.cookies.get(SESSION_COOKIE)
        token = sessions.token(session) if session else None
    return tokens.lookup(token) if token else None


class TooLarge(Exception):
    pass


async def read_capped(request: Request, limit: int) -> bytes:
    """The body, refused (``TooLarge``) past ``limit`` bytes without reading the rest."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge
    return bytes(body)


def login_token(request: Request, body: str) -> str:
    """The token of a login form (urlencoded) or JSON body; '' when there is none."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            found = json.loads(body).get("token", "")
        except (ValueError, AttributeError):
            return ""
        return found.strip() if isinstance(found, str) else ""
    return (parse_qs(body).get("token") or [""])[0].strip()
