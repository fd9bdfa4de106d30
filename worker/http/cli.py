"""``tradescribe serve`` and ``tradescribe token``."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from contracts.errors import TradescribeError
from contracts.redisurl import mask_url

if TYPE_CHECKING:
    from worker.http.answers import RemoteAnswers
    from worker.settings import Settings

Opt = typer.Option
ConfigOpt = Annotated[Path | None, Opt("--config", help="TOML settings file.")]
DbOpt = Annotated[
    str | None,
    Opt("--db", help="SQLite database file, or a postgresql:// URL [env TRADESCRIBE_DB]"),
]
TokensOpt = Annotated[
    Path | None,
    Opt(
        "--tokens",
        envvar="TRADESCRIBE_TOKENS",
        help="Token file (default: <db stem>.tokens.db beside the database; "
        "serve --remote and a PostgreSQL --db have none, so give it) [env TRADESCRIBE_TOKENS]",
    ),
]

token_app = typer.Typer(help="Create, list and revoke the tokens `serve` accepts.",
                        no_args_is_help=True)  # fmt: skip


class ServeError(TradescribeError):
    """``serve`` was asked for something unsafe or impossible."""


def _paths(config: Path | None, db: str | None, tokens: Path | None) -> tuple[Path | str, Path]:
    """The database (the SQLite file, or the PostgreSQL URL) and the token file:
    ``--tokens``, else beside the SQLite file; a URL has no folder, so it needs ``--tokens``."""
    from worker.http.tokens import default_path
    from worker.settings import load_settings

    settings = load_settings(config, db=db)
    if settings.database_url is None:
        return settings.db, tokens or default_path(settings.db)
    if tokens is None:
        raise ServeError(
            f"--db {settings.db_label} is PostgreSQL: there is no database folder to keep the "
            "tokens beside; give --tokens FILE (or TRADESCRIBE_TOKENS), the same on `serve` "
            "and `tradescribe token`"
        )
    return settings.database_url, tokens


def _token_file(config: Path | None, db: str | None, tokens: Path | None) -> Path:
    """The token file: ``--tokens`` (no event database needed), else beside the database."""
    return tokens if tokens is not None else _paths(config, db, None)[1]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    db: DbOpt = None,
    config: ConfigOpt = None,
    tokens: TokensOpt = None,
    host: Annotated[str, Opt(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, Opt(min=0, max=65535, help="Port to bind.")] = 8470,
    redis_url: Annotated[
        str | None,
        Opt(
            "--redis-url",
            help="Redis for POST /api/v1/events and the pipeline's health "
            "[env TRADESCRIBE_REDIS_URL]; without it, neither.",
        ),
    ] = None,
    stream: Annotated[str | None, Opt(help="Stream key for POST /api/v1/events.")] = None,
    group: Annotated[str | None, Opt(help="Consumer group (the pipeline's health).")] = None,
    tls_cert: Annotated[Path | None, Opt("--tls-cert", help="TLS certificate (PEM).")] = None,
    tls_key: Annotated[Path | None, Opt("--tls-key", help="TLS private key (PEM).")] = None,
    insecure_bind: Annotated[
        bool, Opt("--insecure-bind", help="Allow plain HTTP on a non-loopback address.")
    ] = False,
    behind_proxy: Annotated[
        bool,
        Opt(
            "--behind-proxy",
            help="A TLS reverse proxy on this host is in front: trust its "
            "X-Forwarded-For, mark cookies Secure.",
        ),
    ] = False,
    poll_ms: Annotated[int, Opt(min=20, max=5000, help="How often to look for commits.")] = 250,
    remote: Annotated[
        bool,
        Opt(
            "--remote",
            help="The worker runs on another host: ask it over the request channel of "
            "--redis-url (needs its channel key and --tokens) instead of reading --db.",
        ),
    ] = False,
    worker_timeout_s: Annotated[
        float,
        Opt("--worker-timeout", min=0.1, max=120, help="--remote: seconds to wait for an answer."),
    ] = 10.0,
) -> None:
    """Serve the dashboard, the JSON API and the live stream over HTTP (read-only).

    Every request needs a token (tradescribe token create). Reads the database
    file read-only through the query layer, or with --remote asks the worker over
    the request channel; publishing appends to the stream.
    """
    import uvicorn

    from contracts.channelauth import ChannelKeyError
    from worker.http.app import ServeConfig, create_app
    from worker.ops.trust import client_key
    from worker.settings import load_settings

    if (tls_cert is None) != (tls_key is None):
        raise ServeError("give both --tls-cert and --tls-key, or neither")
    if not is_loopback(host) and tls_cert is None and not (insecure_bind or behind_proxy):
        raise ServeError(
            f"refusing to serve plain HTTP on {host}: tokens and session cookies would cross "
            "the network in clear; give --tls-cert/--tls-key, or --behind-proxy (a TLS proxy "
            "on this host), or --insecure-bind if you mean it"
        )
    settings = load_settings(config, db=db, redis_url=redis_url, stream=stream, group=group)
    # Redis only when one was named (flag, TRADESCRIBE_REDIS_URL, config file): a reader
    # never talks to the default localhost:6379 on its own
    named = settings.redis_url if "redis_url" in settings.model_fields_set else None
    key: bytes | None
    if remote:
        database = None
        token_file, answers, key = _remote(settings, db, tokens, named, worker_timeout_s)
        where = f"answers from the worker on {mask_url(named or '')}"
    else:
        database, token_file = _paths(config, db, tokens)
        if isinstance(database, str):
            _say_if_unreachable(database)
        elif not database.parent.is_dir():  # the file itself may come later, with the worker
            raise ServeError(
                f"the folder of --db {database} does not exist; fix --db (the worker's "
                "database), or give --remote to ask a worker on another host"
            )
        try:  # the worker's channel key, to verify its heartbeat for the admins' health
            key = client_key(settings)
        except ChannelKeyError:
            key = None
        answers, where = None, f"database {settings.db_label}"
    app, server = create_app(ServeConfig(
        db=database, tokens=token_file, answers=answers, redis_url=named, stream=settings.stream,
        partitions=settings.partitions,
        group=settings.group, heartbeat_ttl_s=settings.heartbeat_ttl_s, channel_key=key,
        poll_s=poll_ms / 1000,
        secure_cookie=tls_cert is not None or behind_proxy,
    ))  # fmt: skip
    scheme = "https" if tls_cert else "http"
    typer.echo(f"tradescribe serve: {scheme}://{host}:{port}/ ({where}, "
               f"tokens {token_file})", err=True)  # fmt: skip
    uvicorn_server = uvicorn.Server(uvicorn.Config(
        app, host=host, port=port, log_level="info", access_log=False, proxy_headers=behind_proxy,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None, timeout_graceful_shutdown=5,
    ))  # fmt: skip
    stop = uvicorn_server.handle_exit

    def handle_exit(sig: int, frame: FrameType | None) -> None:
        server.watch.closing = True  # end the live streams, or shutdown waits for them
        stop(sig, frame)

    uvicorn_server.handle_exit = handle_exit  # type: ignore[method-assign]
    uvicorn_server.run()


def _say_if_unreachable(url: str) -> None:
    """A warning now, not at the first request, when PostgreSQL cannot be read (the
    schema may come later, with the worker)."""
    from contracts.query import QueryError
    from worker.http.reads import max_seq

    try:
        max_seq(url)
    except QueryError as exc:
        typer.echo(f"tradescribe serve: warning: {exc}; answering 400 until it can be read",
                   err=True)  # fmt: skip


def _remote(
    settings: Settings, db: str | None, tokens: Path | None, redis_url: str | None, timeout_s: float
) -> tuple[Path, RemoteAnswers, bytes]:
    """``serve --remote``: the token file and the worker's answers over the channel, or
    a one-line error naming the missing piece."""
    from contracts.channelauth import ChannelKeyError
    from contracts.client import Client
    from contracts.errors import ForgedReplyError, NoWorkerError, RedisUnreachableError
    from worker.http.answers import RemoteAnswers
    from worker.ops.trust import client_key

    if db is not None:
        raise ServeError("--remote asks the worker over Redis and reads no file: drop --db, "
                         "or drop --remote to read the database on this host")  # fmt: skip
    if redis_url is None:
        raise ServeError("--remote needs --redis-url (or TRADESCRIBE_REDIS_URL): the Redis "
                         "the worker answers requests on")  # fmt: skip
    if tokens is None:
        raise ServeError("--remote has no database to keep tokens beside: give --tokens FILE "
                         "(or TRADESCRIBE_TOKENS), made with `tradescribe token create "
                         "--tokens FILE`")  # fmt: skip
    if settings.channel_key is None and settings.channel_key_file is None:
        raise ServeError("--remote must verify the worker's signed replies: set "
                         "TRADESCRIBE_CHANNEL_KEY or TRADESCRIBE_CHANNEL_KEY_FILE to the "
                         "worker's key (its '<db>.channel-key')")  # fmt: skip
    try:
        key = client_key(settings)
    except ChannelKeyError as exc:
        raise ServeError(str(exc)) from None
    client = Client(redis_url, stream=settings.stream, group=settings.group,
                    timeout_s=timeout_s, channel_key=key)  # fmt: skip
    if not tokens.is_file():
        typer.echo(f"tradescribe serve: warning: no token file at {tokens} yet; requests "
                   f"answer 401 until `tradescribe token create --tokens {tokens}`",
                   err=True)  # fmt: skip
    try:  # say now, not at the first request, when nobody answers
        client.ping(timeout_s=2.0)
    except (NoWorkerError, RedisUnreachableError, ForgedReplyError) as exc:
        typer.echo(f"tradescribe serve: warning: {exc}; answering 503 until it does", err=True)
    return tokens, RemoteAnswers(client), key


@token_app.command("create")
def token_create(
    name: Annotated[str, Opt("--name", help="A name to list and revoke it by.")],
    account: Annotated[list[str], Opt("--account", help="An account it may see (repeat).")] = [],  # noqa: B006
    source: Annotated[
        list[str], Opt("--source", help="A source it may see (repeat; none: all).")
    ] = [],  # noqa: B006
    publish: Annotated[bool, Opt("--publish", help="May POST events as its one --source.")] = False,
    admin: Annotated[bool, Opt("--admin", help="Sees every tenant and dead letters.")] = False,
    db: DbOpt = None,
    config: ConfigOpt = None,
    tokens: TokensOpt = None,
) -> None:
    """Create a token and print it once (only its SHA-256 is kept)."""
    from worker.http.tokens import TokenStore

    path = _token_file(config, db, tokens)
    token, principal = TokenStore(path).create(name, account, source, publish=publish,
                                               admin=admin)  # fmt: skip
    typer.echo(token)
    typer.echo(f"token {principal.name} ({principal.token_id}) saved in {path}; "
               "this is the only time it is shown", err=True)  # fmt: skip


@token_app.command("list")
def token_list(
    db: DbOpt = None,
    config: ConfigOpt = None,
    tokens: TokensOpt = None,
    as_json: Annotated[bool, Opt("--json", help="Print as JSON.")] = False,
) -> None:
    """The tokens (names, scopes, dates; never the secrets)."""
    from worker.http.tokens import TokenStore

    path = _token_file(config, db, tokens)
    rows = TokenStore(path).list()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        scope = "admin" if r["admin"] else ",".join(r["accounts"])
        if r["sources"]:
            scope += " sources=" + ",".join(r["sources"])
        flags = " publish" if r["publish"] else ""
        state = f"revoked {r['revoked_at']}" if r["revoked_at"] else "live"
        typer.echo(f"{r['token_id']}  {r['name']:<20} {scope}{flags}  {state}")


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument(help="Name or id of the token.")],
    db: DbOpt = None,
    config: ConfigOpt = None,
    tokens: TokensOpt = None,
) -> None:
    """Revoke a token: its requests and browser sessions stop at once."""
    from worker.http.tokens import TokenStore

    path = _token_file(config, db, tokens)
    TokenStore(path).revoke(name)
    typer.echo(f"revoked {name}")
