"""``tradescribe backup`` / ``restore`` on PostgreSQL: PostgreSQL's own ``pg_dump`` and
``pg_restore``, run as they would be by hand (never re-implemented here).

When the tool is not on PATH, the error is the exact command to run instead. The
password never goes on a command line (``ps`` shows it): it is taken out of the URL
and handed over in ``PGPASSWORD``.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from contracts.query_db import connect_readonly
from contracts.query_model import QueryError
from contracts.redisurl import mask_url
from worker.store.backup import BackupError

PREFIX = "tradescribe-"
SUFFIX = ".dump"


def _without_password(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password, and the environment that carries it instead."""
    parts = urlsplit(url)
    env = dict(os.environ)
    if parts.password is None:
        return url, env
    env["PGPASSWORD"] = unquote(parts.password)
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.split(':', 1)[0]}@{host}")), env


def _run(tool: str, args: list[str], url: str) -> None:
    """Run ``tool args... --dbname=URL``, or say exactly what to run."""
    plain, env = _without_password(url)
    shown = shlex.join([tool, *args, f"--dbname={plain}"])
    if "PGPASSWORD" in env and plain != url:
        shown += " (the password in PGPASSWORD or ~/.pgpass)"
    found = shutil.which(tool)
    if found is None:
        raise BackupError(
            f"{tool} is not on PATH (PostgreSQL's client tools: apt install "
            f"postgresql-client); run it yourself: {shown}"
        )
    done = subprocess.run([found, *args, f"--dbname={plain}"], env=env, capture_output=True,
                          text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise BackupError(f"{tool} failed: {reason} (the command: {shown})")


def _state(url: str) -> dict[str, Any]:
    """The database's event count and last stream id, read through the query layer."""
    try:
        with connect_readonly(url) as con:
            events = con.execute("SELECT count(*) FROM events").fetchone()[0]
            last = con.execute("SELECT value FROM meta WHERE key = 'last_stream_id'").fetchone()
    except QueryError as exc:
        raise BackupError(str(exc)) from None
    return {"events": int(events), "last_stream_id": last[0] if last else None}


def dump(url: str, to_dir: Path, keep: int) -> dict[str, Any]:
    """``pg_dump --format=custom`` into ``to_dir`` (one consistent snapshot while the
    worker writes); the newest ``keep`` dumps kept (0: all)."""
    state = _state(url)
    to_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = to_dir / f"{PREFIX}{stamp}{SUFFIX}"
    _run("pg_dump", ["--format=custom", f"--file={path}"], url)
    path.chmod(0o600)  # every trade is in it: its owner's only, like the SQLite backups
    removed = []
    if keep:
        dumps = sorted(to_dir.glob(f"{PREFIX}*{SUFFIX}"))
        for old in dumps[:-keep]:
            old.unlink()
            removed.append(str(old))
    return {"path": str(path), "db": mask_url(url), **state, "bytes": path.stat().st_size,
            "tool": "pg_dump", "removed": removed}  # fmt: skip


def restore(file: Path, url: str) -> dict[str, Any]:
    """``pg_restore`` of a dump into an empty database (one transaction)."""
    if not file.is_file():
        raise BackupError(f"{file} does not exist; give a dump made by `tradescribe backup`")
    try:
        with connect_readonly(url) as con:
            taken = con.execute(con.d.has_table, ("events",)).fetchone() is not None
    except QueryError as exc:
        raise BackupError(str(exc)) from None
    if taken:
        raise BackupError(
            f"{mask_url(url)} already holds a tradescribe database; restore into an empty "
            "one (createdb NAME, then --db with its URL), check it, and point the worker at it"
        )
    _run("pg_restore", ["--no-owner", "--exit-on-error", "--single-transaction", str(file)], url)
    return {"restored": str(file), "db": mask_url(url), **_state(url)}
