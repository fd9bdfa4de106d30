"""Operator commands: ``status``, ``ping``, ``check`` and ``config``.

They ask the running worker over Redis (request channel, heartbeat key) and never
open the database, so they work from any host that reaches Redis.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from contracts.errors import NoWorkerError, RedisUnreachableError
from contracts.redisclient import REDIS_ERRORS, SyncRedis, sync_client
from contracts.redisurl import mask_url
from worker.cli.options import (
    ConfigOpt,
    DbOpt,
    GroupOpt,
    JsonOpt,
    PartitionsOpt,
    RedisOpt,
    StreamOpt,
)
from worker.cli.output import cell
from worker.cli.remote import exits_unanswered, worker_client
from worker.errors import EXIT_NO_WORKER
from worker.ops.health import Health, check_health
from worker.ops.partition_health import PartitionsHealth, check_partitions
from worker.ops.trust import client_key
from worker.settings import Settings, load_settings

TimeoutOpt = Annotated[
    float, typer.Option("--timeout", min=0.05, max=300, help="Seconds to wait for the worker.")
]


def _settings(config: Path | None, **flags: Any) -> Settings:
    return load_settings(config, **flags)


def _ask(s: Settings, timeout: float, command: str) -> tuple[dict[str, Any], float]:
    """The worker's answer and the round trip, or exit 2 (no worker) / 3 (no Redis)."""
    with exits_unanswered(), worker_client(s, timeout) as client:
        started = time.perf_counter()
        result = client.request(command)
        return result, time.perf_counter() - started


def status(
    config: ConfigOpt = None,
    redis_url: RedisOpt = None,
    stream: StreamOpt = None,
    group: GroupOpt = None,
    partitions: PartitionsOpt = None,
    consumer: Annotated[
        str | None,
        typer.Option("--consumer", help="Ask only the worker of this consumer name."),
    ] = None,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 2.0,
) -> None:
    """Ask the running worker how it is doing (exit 2: no worker, 3: no Redis).

    With --partitions K > 1 every worker answers: a table each (--json: {"workers":
    [...]}, by consumer name); --consumer NAME prints that worker's alone."""
    s = _settings(config, redis_url=redis_url, stream=stream, group=group, partitions=partitions)
    if consumer is None and s.partitions == 1:
        result, _ = _ask(s, timeout, "status")
        _print_status(result, as_json)
        return
    with exits_unanswered(), worker_client(s, timeout) as client:
        results = sorted(client.request_all("status"), key=lambda r: str(r.get("consumer")))
    if consumer is not None:
        mine = [r for r in results if r.get("consumer") == consumer]
        if not mine:
            others = ", ".join(str(r.get("consumer")) for r in results)
            typer.secho(
                f"error: no worker named {consumer} answered within {timeout:g} s "
                f"(these did: {others})",
                fg="red",
                err=True,
            )
            raise typer.Exit(EXIT_NO_WORKER)
        _print_status(mine[0], as_json)
    elif as_json:
        typer.echo(json.dumps({"workers": results}, indent=2, sort_keys=True))
    else:
        for result in results:
            Console().print(status_table(result))


def _print_status(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    Console().print(status_table(result))


def ping(
    config: ConfigOpt = None,
    redis_url: RedisOpt = None,
    stream: StreamOpt = None,
    group: GroupOpt = None,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 2.0,
) -> None:
    """Round trip to the worker through Redis (exit 0: answered, 2: no worker, 3: no Redis)."""
    s = _settings(config, redis_url=redis_url, stream=stream, group=group)
    result, seconds = _ask(s, timeout, "ping")
    if as_json:
        typer.echo(json.dumps({"ok": True, "rtt_ms": round(seconds * 1000, 3), **result}))
    else:
        typer.echo(f"pong from {result.get('consumer')} in {seconds * 1000:.1f} ms")


def check(
    config: ConfigOpt = None,
    redis_url: RedisOpt = None,
    stream: StreamOpt = None,
    group: GroupOpt = None,
    partitions: PartitionsOpt = None,
    max_beat_age: Annotated[
        float | None,
        typer.Option("--max-beat-age", min=0.1, help="Seconds (default: the heartbeat TTL)."),
    ] = None,
    max_pending_age: Annotated[
        float, typer.Option("--max-pending-age", min=0.1, help="Oldest pending entry, seconds.")
    ] = 300.0,
    error_window: Annotated[
        float, typer.Option("--error-window", min=0, help="A worker error this recent fails.")
    ] = 60.0,
    ping_timeout: Annotated[
        float,
        typer.Option(
            "--ping-timeout",
            min=0.05,
            max=60,
            help="Seconds the worker has to answer a signed ping (a heartbeat alone can be "
            "replayed for as long as it is young).",
        ),
    ] = 2.0,
    min_workers: Annotated[
        int | None,
        typer.Option(
            "--min-workers",
            min=1,
            help="With --partitions: fail when fewer workers than this are alive, even "
            "once the others hold every partition.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Exit 0 if a worker beat recently, answers a signed ping now and nothing is stuck,
    else 1 with the reasons. With --partitions K > 1: every partition has a live holder
    (its own fresh beat, an answer to the ping); the JSON has each worker and partition."""
    s = _settings(config, redis_url=redis_url, stream=stream, group=group, partitions=partitions)
    if s.partitions > 1:
        _check_partitions(s, max_beat_age, max_pending_age, error_window, ping_timeout,
                          min_workers, as_json)  # fmt: skip
    key = client_key(s)

    def judge(client: SyncRedis) -> Health:
        return check_health(
            client,
            s.stream,
            s.group,
            key=key,
            max_beat_age_s=max_beat_age or s.heartbeat_ttl_s,
            max_pending_age_s=max_pending_age,
            error_window_s=error_window,
        )

    def pinged(health: Health) -> None:
        if health.ok:
            _answers_a_ping(s, ping_timeout, health)

    _report_health(s, as_json, judge, pinged)


def _check_partitions(
    s: Settings,
    max_beat_age: float | None,
    max_pending_age: float,
    error_window: float,
    ping_timeout: float,
    min_workers: int | None,
    as_json: bool,
) -> NoReturn:
    """``check`` of workers sharing partitions: exits 0 or 1."""
    key = client_key(s)

    def judge(client: SyncRedis) -> PartitionsHealth:
        return check_partitions(
            client,
            s.stream,
            s.group,
            s.partitions,
            key=key,
            answered=_who_answers_a_ping(s, ping_timeout),
            max_beat_age_s=max_beat_age or s.heartbeat_ttl_s,
            max_pending_age_s=max_pending_age,
            error_window_s=error_window,
            min_workers=min_workers,
        )

    _report_health(s, as_json, judge)


_H = TypeVar("_H", Health, PartitionsHealth)


def _report_health(
    s: Settings,
    as_json: bool,
    judge: Callable[[SyncRedis], _H],
    then: Callable[[_H], None] | None = None,
) -> NoReturn:
    """Judge with a client of ``s``'s Redis (``then``: after it is closed), print the
    verdict (one line, or JSON) and exit 0 if healthy, else 1; Redis not reachable is
    unhealthy, said in one line."""
    client: SyncRedis | None = None
    try:
        client = sync_client(s.redis_url, socket_timeout=5, socket_connect_timeout=5)
        health = judge(client)
    except (*REDIS_ERRORS, RedisUnreachableError) as exc:
        said = str(exc) if isinstance(exc, RedisUnreachableError) else ""  # names the URL
        line = f"unhealthy: {said or f'cannot reach Redis at {mask_url(s.redis_url)}: {exc}'}"
        typer.echo(json.dumps({"ok": False, "reasons": [line]}) if as_json else line)
        raise typer.Exit(1) from None
    finally:
        if client is not None:
            client.close()
    if then is not None:
        then(health)
    typer.echo(json.dumps(health.as_dict(), default=str) if as_json else health.summary())
    raise typer.Exit(0 if health.ok else 1)


def _who_answers_a_ping(s: Settings, timeout: float) -> set[str]:
    """The consumers that answer one signed ping within ``timeout`` (every listening
    worker answers it); empty when none does."""
    try:
        with worker_client(s, timeout) as client:
            return {str(r.get("consumer")) for r in client.request_all("ping")}
    except NoWorkerError:
        return set()


def _answers_a_ping(s: Settings, timeout: float, health: Health) -> None:
    """A worker is alive only if it answers now: a signed reply is bound to this request,
    whereas a copy of a genuine heartbeat, set again, verifies until it is too old."""
    try:
        with worker_client(s, timeout) as client:
            client.request("ping")
    except (NoWorkerError, RedisUnreachableError) as exc:
        health.reasons.append(f"no worker answered a signed ping within {timeout:g} s: {exc}")
        health.ok = False


def config(
    config: ConfigOpt = None,
    redis_url: RedisOpt = None,
    stream: StreamOpt = None,
    group: GroupOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the effective settings (flags > TRADESCRIBE_* > TOML > defaults), password masked."""
    s = _settings(config, redis_url=redis_url, stream=stream, group=group, db=db)
    values = s.public()
    if as_json:
        typer.echo(json.dumps(values, indent=2, sort_keys=True))
        return
    table = Table("setting", "value", "meaning", title="tradescribe settings")
    for name, value in values.items():
        field = Settings.model_fields.get(name)
        meaning = field.description if field is not None else "where the secret comes from"
        table.add_row(name, cell(value), meaning or "")
    Console().print(table)


def status_table(r: dict[str, Any]) -> Table:
    table = Table("", "", title=f"tradescribe worker {r.get('worker_id')}", show_header=False)
    rows: list[tuple[str, Any]] = [
        ("version", r.get("version")),
        ("uptime", _duration(r.get("uptime_s"))),
        ("redis", f"{r.get('redis_url')} (redis {r.get('redis_version')})"),
        ("stream / group", f"{r.get('stream')} / {r.get('group')}"),
        ("committed events", f"{r.get('committed_events')} since start"),
        ("  by type", _by_type(r.get("committed_by_type") or {})),
        ("events stored", r.get("events_stored")),
        ("dead letters", f"{r.get('dead_letters')} ({r.get('dead_letters_since_start')} new)"),
        ("pending", f"{r.get('pending')} (oldest {_duration(r.get('oldest_pending_age_s'))})"),
        ("lag", f"{r.get('lag')} ({r.get('lag_source')})"),
        ("events/s (1 min)", r.get("events_per_s")),
        ("last commit", f"{_duration(r.get('last_commit_age_s'))} ago"),
        ("batch size p50 / max", f"{r.get('batch_size_p50')} / {r.get('batch_size_max')}"),
        ("commit ms p50 / p99", f"{r.get('commit_ms_p50')} / {r.get('commit_ms_p99')}"),
        ("database", r.get("db_path")),
        ("db / wal size", f"{_bytes(r.get('db_bytes'))} / {_bytes(r.get('wal_bytes'))}"),
        ("schema version", r.get("schema_version")),
        ("last error", _last_error(r)),
    ]
    if "partitions" in r:  # a worker of partitions: those it holds now
        rows.insert(4, ("partitions held", " ".join(f"{{{p}}}" for p in r["partitions"]) or "none"))
    for name, value in rows:
        table.add_row(name, cell("-" if value is None else value))
    return table


def _by_type(by_type: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in by_type.items()) or "-"


def _last_error(r: dict[str, Any]) -> str:
    if not r.get("last_error"):
        return "none"
    return f"{r['last_error']} ({_duration(r.get('last_error_age_s'))} ago)"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
