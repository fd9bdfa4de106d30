"""Errors the worker turns into one clear line for a person, and their exit codes.

Exit codes (the CLI's, documented in README and docs/faults-and-security.md):
1 an error the message explains, 2 no worker answered, 3 Redis cannot be reached (or
what answers is not Redis), 4 permission denied (systemd's EXIT_NOPERMISSION),
6 the database path is wrong (systemd's EXIT_NOTCONFIGURED). The unit file does not
restart the worker after 4 or 6 (``RestartPreventExitStatus``): a restart would
meet the same file.
"""

from __future__ import annotations

import getpass
import os
import sqlite3

import redis

from contracts.errors import NoWorkerError, RedisUnreachableError, TradescribeError

EXIT_ERROR = 1
EXIT_NO_WORKER = 2
EXIT_NO_REDIS = 3
EXIT_NO_PERMISSION = 4
EXIT_NOT_CONFIGURED = 6


class WorkerError(TradescribeError):
    """Base of the worker's own errors."""

    exit_code = EXIT_ERROR


class ConfigError(WorkerError):
    """A setting has a value it cannot take."""


class PartitionsNeedPostgresError(ConfigError):
    """``partitions`` > 1 with SQLite: one file has one writer (a restart would not help)."""

    exit_code = EXIT_NOT_CONFIGURED


class DatabasePathError(WorkerError):
    """``--db`` names no file the worker can create (a folder, a missing folder)."""

    exit_code = EXIT_NOT_CONFIGURED


class DatabasePermissionError(WorkerError):
    """The database file or its folder cannot be written by this user."""

    exit_code = EXIT_NO_PERMISSION


class AlreadyRunningError(WorkerError):
    """Another worker holds the database file or the consumer group."""


class DatabaseNewerError(WorkerError):
    """The database was written by a newer tradescribe."""


class LeaseLostError(WorkerError):
    """The Redis writer lease was taken by someone else while we ran."""


class RedisSetupError(WorkerError):
    """Redis answered with an error that needs a person (NOGROUP, auth, ...)."""


def login_name() -> str:
    """The user this process runs as, by name if it has one."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.geteuid())


def running_user() -> str:
    return f"{login_name()} (uid {os.geteuid()})"


def one_line(exc: BaseException) -> tuple[str, int] | None:
    """The line and exit code a person gets for ``exc``, or None for a bug (a traceback).

    Exception groups (task groups wrap what a task raised) are searched for the
    first error with a line.
    """
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = one_line(inner)
            if found is not None:
                return found
        return None
    if isinstance(exc, NoWorkerError):
        return str(exc), EXIT_NO_WORKER
    if isinstance(exc, RedisUnreachableError):
        return str(exc), EXIT_NO_REDIS
    if isinstance(exc, TradescribeError):
        return str(exc), getattr(exc, "exit_code", EXIT_ERROR)
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | redis.InvalidResponse):
        return (
            f"what answers at --redis-url is not a working Redis server: {exc}; "
            "check the host and port in --redis-url",
            EXIT_NO_REDIS,
        )
    if isinstance(exc, PermissionError):
        return (
            f"permission denied: {exc.filename or exc}; running as {running_user()}: give that "
            "user access to it (chown/chmod) or choose another path",
            EXIT_NO_PERMISSION,
        )
    if isinstance(exc, sqlite3.DatabaseError):
        return f"database: {exc} (is --db a tradescribe database?)", EXIT_ERROR
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}", EXIT_ERROR
    return None
