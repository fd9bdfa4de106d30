"""One frozen settings model, built once at the edge (the CLI) and passed down.

Precedence: command-line flags > ``TRADESCRIBE_*`` environment variables >
TOML file (``--config``, default ``/etc/tradescribe/tradescribe.toml`` when it
exists) > defaults.
"""

from __future__ import annotations

import contextvars
import os
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from contracts.events import DEFAULT_STREAM
from contracts.partitions import MAX_PARTITIONS
from contracts.redisurl import check_redis_url, mask_url, with_password
from worker.errors import ConfigError
from worker.ops.trust import key_source

DEFAULT_CONFIG = Path("/etc/tradescribe/tradescribe.toml")
# batch_max unless set: measured best per engine (docs/benchmark.md, 2026-12-06 night):
# PostgreSQL drains 6-8 % faster at 5,000 than at 2,000, SQLite no faster.
SQLITE_BATCH_MAX = 2000
PG_BATCH_MAX = 5000
_toml_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("toml", default=None)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TRADESCRIBE_", frozen=True, extra="forbid", validate_default=True
    )

    redis_url: str = Field(
        "redis://localhost:6379/0",
        description="Redis to read from (redis://, rediss:// for TLS, unix://; "
        "redis+cluster://host:port[,host:port...] for a Redis Cluster).",
    )
    redis_password: SecretStr | None = Field(
        None,
        description="Redis password, kept out of the URL (and so out of `ps`); "
        "TRADESCRIBE_REDIS_PASSWORD.",
    )
    redis_password_file: Path | None = Field(
        None, description="A file holding the Redis password (its first line)."
    )
    db: Path = Field(
        Path("tradescribe.db"),
        description="The SQLite database file; a postgres:// or postgresql:// URL given "
        "here selects PostgreSQL instead (kept in database_url).",
    )
    database_url: str | None = Field(
        None,
        description="PostgreSQL to write to and read from (postgresql://user@host/dbname); "
        "unset: SQLite at db (docs/postgresql.md).",
    )
    stream: str = Field(DEFAULT_STREAM, min_length=1, description="Stream key bots publish to.")
    partitions: int = Field(
        1,
        ge=1,
        le=MAX_PARTITIONS,
        description="Streams the load is split into: with K > 1 events go to "
        "<stream>:{p} by source and each partition has one worker at a time "
        "(PostgreSQL only; docs/scaling.md). Publishers must use the same K.",
    )
    group: str = Field("tradescribe", min_length=1, description="Consumer group name.")
    consumer: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        description="Consumer name; keep it stable so a restart re-reads its own pending.",
    )
    batch_max: int = Field(
        SQLITE_BATCH_MAX,
        ge=1,
        le=100_000,
        description=f"Most events in one transaction; unset: {SQLITE_BATCH_MAX:,} on SQLite, "
        f"{PG_BATCH_MAX:,} on PostgreSQL (a batch's round trips weigh more there; "
        "docs/benchmark.md).",
    )
    cache_rows: int = Field(
        20_000,
        ge=0,
        description="Trade/signal/position rows kept in memory between batches "
        "(at least 3 batches' worth is always kept); misses are read from the file.",
    )
    block_ms: int = Field(
        1000, ge=1, le=60_000, description="Longest wait for new events before a read returns."
    )
    claim_idle_ms: int = Field(
        30_000, ge=0, description="Entries pending this long at a dead consumer are claimed."
    )
    claim_interval_s: float = Field(30.0, gt=0, description="How often to look for such entries.")
    max_deliveries: int = Field(
        5,
        ge=1,
        description="Dead-letter an entry that stopped the worker this many times while "
        "being decoded (redeliveries after restarts, locks or a full disk never count).",
    )
    max_message_bytes: int = Field(
        65_536, ge=256, description="Larger stream entries are dead-lettered unread."
    )
    synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL", description="SQLite synchronous mode; FULL survives power loss."
    )
    busy_timeout_ms: int = Field(5000, ge=0, description="SQLite busy timeout.")
    writer_process: bool = Field(
        True,
        description="Commit batches in a child process, beside the event loop instead of "
        "sharing its GIL and core: SQLite's merge and commit, or PostgreSQL's on a "
        "connection of its own that holds the writer's lock (false: in the worker process).",
    )
    retry_max_s: float = Field(5.0, gt=0, description="Longest back-off after a transient error.")
    shutdown_grace_s: float = Field(
        10.0, gt=0, description="On stop, time to finish the batch in hand before cancelling."
    )
    trim_keep_s: float = Field(
        3600.0,
        ge=0,
        description="Committed entries younger than this stay in the stream (0: never trim).",
    )
    trim_interval_s: float = Field(60.0, gt=0, description="How often to trim.")
    lease_ttl_ms: int = Field(
        10_000, ge=1000, description="Writer lease in Redis; another worker waits this long."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = Field("text", description="json for journald.")
    # running as a service: heartbeat for `tradescribe check`, Prometheus
    heartbeat_interval_s: float = Field(
        5.0, gt=0, le=3600, description="How often the worker writes its heartbeat key."
    )
    heartbeat_ttl_s: float = Field(
        30.0, gt=0, le=86_400, description="The heartbeat key expires this long after a beat."
    )
    metrics_port: int | None = Field(
        None, ge=1, le=65_535, description="Serve Prometheus metrics on this port (off if unset)."
    )
    metrics_host: str = Field("127.0.0.1", min_length=1, description="Address for metrics.")
    # scheduled backups (worker/store/backup.py)
    backup_interval_s: float = Field(
        0.0, ge=0, description="Take a backup this often while running (0: never)."
    )
    backup_dir: Path | None = Field(
        None, description="Where backups go (default: a 'backups' folder beside the database)."
    )
    backup_keep: int = Field(7, ge=1, description="How many scheduled backups to keep.")
    # trust: replies and heartbeats are signed with this key (HMAC-SHA256)
    channel_key: SecretStr | None = Field(
        None,
        description="Key that signs the worker's replies and heartbeat (at least 16 "
        "characters; TRADESCRIBE_CHANNEL_KEY). Unset: channel_key_file, else "
        "'<db>.channel-key', which the worker creates (mode 0600).",
    )
    channel_key_file: Path | None = Field(
        None, description="A file holding the channel key (shared by the worker and clients)."
    )

    @field_validator("redis_url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        check_redis_url(url)
        return url

    @model_validator(mode="before")
    @classmethod
    def _url_as_db(cls, values: Any) -> Any:
        """``--db postgresql://...`` (or TRADESCRIBE_DB) is a database URL, not a path;
        with a database URL, ``batch_max`` unset is PostgreSQL's default."""
        if not isinstance(values, dict):
            return values
        db = values.get("db")
        if isinstance(db, str) and db.startswith(PG_SCHEMES):
            if values.get("database_url") is not None:
                raise ValueError("a PostgreSQL URL is given twice (db and database_url)")
            values = {k: v for k, v in values.items() if k != "db"}
            values["database_url"] = db
        elif isinstance(db, str) and "://" in db:
            raise ValueError(
                f"db must be a file path or a postgresql:// URL, not {db.split('://')[0]}://"
            )
        if values.get("database_url") is not None and values.get("batch_max") is None:
            values = {**values, "batch_max": PG_BATCH_MAX}
        return values

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, url: str | None) -> str | None:
        if url is not None:
            check_postgres_url(url)
        return url

    @property
    def engine(self) -> Literal["sqlite", "postgresql"]:
        return "sqlite" if self.database_url is None else "postgresql"

    @property
    def db_label(self) -> str:
        """The database as a person may see it: the file, or the URL without password."""
        return str(self.db) if self.database_url is None else mask_url(self.database_url)

    @model_validator(mode="after")
    def _password_into_url(self) -> Settings:
        """A password from the environment or a file joins the URL in memory only:
        every client built from ``redis_url`` uses it, no command line shows it."""
        password = self.redis_password.get_secret_value() if self.redis_password else None
        if self.redis_password_file is not None:
            if password is not None:
                raise ConfigError(
                    "the Redis password is set twice (redis_password and "
                    "redis_password_file): keep one"
                )
            password = _read_password(self.redis_password_file)
        if password is None:
            return self
        try:
            url = with_password(self.redis_url, password)
        except ValueError as exc:
            raise ConfigError(f"{exc} (remove it from redis_url or unset the other)") from None
        object.__setattr__(self, "redis_url", url)  # frozen: set once, while validating
        return self

    def redis_password_source(self) -> str:
        """Where the Redis password came from (never what it is)."""
        if self.redis_password_file is not None:
            return f"file {self.redis_password_file}"
        if self.redis_password is not None:
            env = os.environ.get("TRADESCRIBE_REDIS_PASSWORD")
            if env == self.redis_password.get_secret_value():
                return "env TRADESCRIBE_REDIS_PASSWORD"
            return "setting redis_password"
        return "url" if urlsplit(self.redis_url).password is not None else "none"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = _toml_file.get()
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    def public(self) -> dict[str, Any]:
        """The settings as a person may see them: secrets masked."""
        values = self.model_dump(mode="json")
        values["redis_url"] = mask_url(self.redis_url)
        if self.database_url is not None:
            values["database_url"] = mask_url(self.database_url)
        values["redis_password_source"] = self.redis_password_source()
        values["channel_key_source"] = key_source(self)
        return values


PG_SCHEMES = ("postgres://", "postgresql://")


def check_postgres_url(url: str) -> None:
    """Raise ValueError (one line, no password) unless ``url`` names a PostgreSQL database."""
    if not url.startswith(PG_SCHEMES):
        raise ValueError("must start with postgresql:// or postgres://")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    if not parts.path.strip("/"):
        raise ValueError("names no database: postgresql://user@host/dbname")
    if not parts.hostname and "host=" not in parts.query:
        raise ValueError("names no host: postgresql://user@host/dbname (or ?host=/socket/dir)")


def load_settings(config: Path | None = None, **flags: Any) -> Settings:
    """Build the settings from flags, environment and TOML; bad input -> ConfigError."""
    if config is None and DEFAULT_CONFIG.is_file():
        config = DEFAULT_CONFIG
    if config is not None:
        if not config.is_file():
            raise ConfigError(f"config file {config} does not exist (fix the --config path)")
        try:
            with config.open("rb") as fh:
                tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {config} is not valid TOML: {exc}") from exc
    token = _toml_file.set(config)
    try:
        return Settings(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, config, set(flags))) from exc
    finally:
        _toml_file.reset(token)


def _read_password(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the Redis password file {path}: {exc.strerror or exc} "
            "(fix redis_password_file or TRADESCRIBE_REDIS_PASSWORD_FILE)"
        ) from None
    if not lines or not lines[0]:
        raise ConfigError(f"the Redis password file {path} is empty (its first line is used)")
    return lines[0]


def _describe(exc: ValidationError, config: Path | None, flags: set[str]) -> str:
    """One line per error; a setting's command-line flag is named only where the
    command has one (``flags``: the settings it offers as flags)."""
    lines = []
    for err in exc.errors(include_url=False):
        name = ".".join(str(p) for p in err["loc"])
        field = Settings.model_fields.get(name)
        if err["type"] == "extra_forbidden":
            where = f" in {config}" if config else ""
            known = ", ".join(sorted(Settings.model_fields))
            lines.append(f"unknown setting '{name}'{where}; known settings: {known}")
            continue
        if not name:  # a check of several settings at once (the db's URL or path)
            lines.append(f"bad value for setting 'db' (--db or TRADESCRIBE_DB): {err['msg']}")
            continue
        hint = f" ({field.description})" if field and field.description else ""
        env = f"TRADESCRIBE_{name.upper()}"
        flag = "db" if name == "database_url" else name  # a URL given as --db lands there
        where = f"--{flag.replace('_', '-')} or {env}" if flag in flags else env
        if config is not None:
            where += f" or {name} in {config}"
        # A mistyped Redis URL may hold a password: never echo it, nor a secret.
        secret = name in ("redis_url", "redis_password", "channel_key", "database_url")
        got = "" if secret else f"; got {err.get('input')!r}"
        lines.append(f"bad value for setting '{name}' ({where}): {err['msg']}{got}{hint}")
    return "; ".join(lines)
