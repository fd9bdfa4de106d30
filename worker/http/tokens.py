"""Access tokens: who may read (and publish) which accounts and sources.

Tokens live in a small SQLite file of their own beside the database
(``<db stem>.tokens.db``), not in the event database: the worker is that file's
only writer and every table in it is a function of the event log, while tokens
are neither events nor rebuilt from them, and ``token create`` must work while
the worker runs. Only the SHA-256 of a token is stored; the token itself is
printed once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.errors import TradescribeError
from worker.http.memo import FileMemo

PREFIX = "tsk_"
MAX_REMEMBERED = 1024  # live tokens a server remembers (a lookup past it reads the file)
SCHEMA = """CREATE TABLE IF NOT EXISTS tokens (
    token_id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL UNIQUE,
    accounts TEXT NOT NULL,
    sources TEXT NOT NULL,
    publish INTEGER NOT NULL,
    admin INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
)"""


class TokenError(TradescribeError):
    """A token could not be created, found or revoked."""


@dataclass(frozen=True)
class Principal:
    """What one token may see: its accounts and sources (empty: all of its accounts'
    sources); an admin sees every tenant, dead letters and pipeline health."""

    token_id: str
    name: str
    accounts: tuple[str, ...]
    sources: tuple[str, ...]
    publish: bool
    admin: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "token_id": self.token_id,
            "name": self.name,
            "accounts": list(self.accounts),
            "sources": list(self.sources),
            "publish": self.publish,
            "admin": self.admin,
        }


def default_path(db: Path) -> Path:
    return db.with_name(f"{db.stem}.tokens.db")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class TokenStore:
    """The token file. Each call opens its own short connection (the file is tiny;
    a revoked token stops working at its next request)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._live = FileMemo(path)  # live tokens by digest, while the file is unchanged

    @contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        if write:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.path, timeout=5.0)
            self.path.chmod(0o600)
            con.execute(SCHEMA)
        elif not self.path.is_file():
            raise TokenError(
                f"no token file at {self.path}; create a token first: "
                "tradescribe token create --name NAME --account ACC"
            )
        else:
            con = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
        try:
            with con:
                yield con
        finally:
            con.close()

    def create(
        self,
        name: str,
        accounts: list[str],
        sources: list[str],
        *,
        publish: bool = False,
        admin: bool = False,
    ) -> tuple[str, Principal]:
        """A new token (returned once, never stored) and what it may see."""
        if not accounts and not admin:
            raise TokenError("a token needs at least one --account (or --admin)")
        if publish and len(sources) != 1:
            raise TokenError("a --publish token is bound to exactly one --source")
        token = PREFIX + secrets.token_urlsafe(32)
        principal = Principal(
            token_id=secrets.token_hex(6),
            name=name,
            accounts=tuple(accounts),
            sources=tuple(sources),
            publish=publish,
            admin=admin,
        )
        with self._connect(write=True) as con:
            if con.execute("SELECT 1 FROM tokens WHERE name = ?", (name,)).fetchone():
                raise TokenError(f"a token named {name!r} exists (or was revoked); pick another")
            con.execute(
                "INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (principal.token_id, name, digest(token), json.dumps(accounts),
                 json.dumps(sources), int(publish), int(admin), _now()),
            )  # fmt: skip
        return token, principal

    def lookup(self, token: str) -> Principal | None:
        """The live (not revoked) token with this secret, or None. A token found is
        remembered until the file next changes (a revocation is a commit to it), so a
        request costs no connection to the file."""
        if not token.startswith(PREFIX) or len(token) > 200 or not self.path.is_file():
            return None
        key = digest(token)
        try:
            live = self._live.current()
        except (OSError, sqlite3.Error):  # the file went meanwhile: as before, read it
            return self._find(key)
        found: Principal | None = live.get(key)
        if found is None:
            found = self._find(key)
            if found is not None and len(live) < MAX_REMEMBERED:
                live[key] = found
        return found

    def _find(self, key: str) -> Principal | None:
        with self._connect() as con:
            row = con.execute(
                "SELECT token_id, name, accounts, sources, publish, admin FROM tokens"
                " WHERE sha256 = ? AND revoked_at IS NULL",
                (key,),
            ).fetchone()
        if row is None:
            return None
        return Principal(row[0], row[1], tuple(json.loads(row[2])), tuple(json.loads(row[3])),
                         bool(row[4]), bool(row[5]))  # fmt: skip

    def list(self) -> list[dict[str, Any]]:
        """Every token without its secret (nor its hash)."""
        if not self.path.is_file():
            return []
        with self._connect() as con:
            rows = con.execute(
                "SELECT token_id, name, accounts, sources, publish, admin, created_at, revoked_at"
                " FROM tokens ORDER BY created_at, name"
            ).fetchall()
        return [
            {"token_id": r[0], "name": r[1], "accounts": json.loads(r[2]),
             "sources": json.loads(r[3]), "publish": bool(r[4]), "admin": bool(r[5]),
             "created_at": r[6], "revoked_at": r[7]}
            for r in rows
        ]  # fmt: skip

    def revoke(self, name_or_id: str) -> str:
        with self._connect(write=True) as con:
            done = con.execute(
                "UPDATE tokens SET revoked_at = ? WHERE (name = ? OR token_id = ?)"
                " AND revoked_at IS NULL",
                (_now(), name_or_id, name_or_id),
            ).rowcount
        if not done:
            raise TokenError(f"no live token named or with id {name_or_id!r}; see token list")
        return name_or_id
