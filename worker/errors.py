"""Errors the worker turns into one clear line for a person."""

from __future__ import annotations

from contracts.errors import TradescribeError


class WorkerError(TradescribeError):
    """Base of the worker's own errors."""


class ConfigError(WorkerError):
    """A setting has a value it cannot take."""


class AlreadyRunningError(WorkerError):
    """Another worker holds the database file or the consumer group."""


class DatabaseNewerError(WorkerError):
    """The database was written by a newer tradescribe."""


class LeaseLostError(WorkerError):
    """The Redis writer lease was taken by someone else while we ran."""


class RedisSetupError(WorkerError):
    """Redis answered with an error that needs a person (NOGROUP, auth, ...)."""
