"""A PostgreSQL this suite starts itself, for the PostgreSQL store's tests.

From the ``pgserver`` wheel (PostgreSQL's binaries; it listens on a unix socket in its
own temporary folder, never on a TCP port, and runs the server as a user of its own
when the tests run as root), else the system's ``initdb``/``pg_ctl`` on a free port of
127.0.0.1. Neither: the tests are skipped, with the reason. Never the PostgreSQL that
may already run on this machine (port 5432). Every test gets a database of its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

_DEBIAN = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def _from_pgserver(folder: Path) -> tuple[str, object] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver  # type: ignore[import-untyped,unused-ignore]

            server = pgserver.get_server(folder, cleanup_mode="delete")
    except Exception as exc:  # any reason it cannot start: try the system's binaries
        _note(f"pgserver: {exc}")
        return None
    return str(server.get_uri()), server


_reasons: list[str] = []


def _note(reason: str) -> None:
    _reasons.append(reason)


def _binary(name: str) -> str | None:
    for folder in _DEBIAN:
        if (folder / name).is_file():
            return str(folder / name)
    return shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _from_initdb(folder: Path) -> tuple[str, Path] | None:
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        _note("no initdb/pg_ctl on this machine")
        return None
    if os.geteuid() == 0:
        _note("initdb refuses to run as root")
        return None
    data = folder / "data"
    port = _free_port()
    try:
        subprocess.run([initdb, "-D", str(data), "-U", "postgres", "-A", "trust"],
                       check=True, capture_output=True)  # fmt: skip
        subprocess.run(
            [pg_ctl, "-D", str(data), "-w", "-l", str(folder / "log"), "-o",
             f"-h 127.0.0.1 -p {port} -k {folder}", "start"],
            check=True, capture_output=True,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as exc:
        _note(f"initdb/pg_ctl: {exc}")
        return None
    return f"postgresql://postgres@127.0.0.1:{port}/postgres", data


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """The URL of the suite's own PostgreSQL server (its ``postgres`` database)."""
    _reasons.clear()
    folder = Path(tempfile.mkdtemp(prefix="tradescribe-pg-"))
    folder.chmod(0o755)  # pgserver runs the server as its own user when we are root
    started = _from_pgserver(folder / "pgserver")
    if started is not None:
        url, server = started
        try:
            yield url
        finally:
            with contextlib.suppress(Exception):
                server.cleanup()  # type: ignore[attr-defined]
            shutil.rmtree(folder, ignore_errors=True)
        return
    system = _from_initdb(folder)
    if system is None:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip("no PostgreSQL could be started: " + "; ".join(_reasons))
    url, data = system
    try:
        yield url
    finally:
        pg_ctl = _binary("pg_ctl")
        assert pg_ctl is not None
        subprocess.run([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, check=False)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)


def database_url(admin_url: str, name: str) -> str:
    """``admin_url`` with another database name (the socket folder in ``?host=`` kept)."""
    head, _, tail = admin_url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{tail}" if tail else "")


def create_database_sync(admin_url: str) -> str:
    """A new, empty database of the suite's server (psycopg: for sync fixtures)."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    return database_url(admin_url, name)


def migrated_database(admin_url: str) -> str:
    """A new database of the suite's server at the store's latest schema version."""
    import anyio

    from worker.store.postgres import PostgresStore

    url = create_database_sync(admin_url)

    async def migrate() -> None:
        store = await PostgresStore.open(url)
        try:
            await store.migrate()
        finally:
            await store.close()

    anyio.run(migrate)
    return url


async def create_database(admin_url: str) -> str:
    import asyncpg

    name = f"t_{uuid.uuid4().hex[:12]}"
    con = await asyncpg.connect(admin_url)
    try:
        await con.execute(f"CREATE DATABASE {name}")
    finally:
        await con.close()
    return database_url(admin_url, name)
