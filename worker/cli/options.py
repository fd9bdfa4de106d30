"""The options several commands share, defined once so their names and help agree."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML settings file (default /etc/tradescribe/tradescribe.toml if it exists).",
        show_default=False,
    ),
]
RedisOpt = Annotated[
    str | None,
    typer.Option("--redis-url", help="Redis URL [env TRADESCRIBE_REDIS_URL].", show_default=False),
]
DbOpt = Annotated[
    str | None,  # a path, or a postgresql:// URL (Path would fold its "//")
    typer.Option(
        "--db",
        help="SQLite database file, or postgresql://user@host/dbname [env TRADESCRIBE_DB].",
        show_default=False,
    ),
]
StreamOpt = Annotated[
    str | None,
    typer.Option("--stream", help="Stream key [env TRADESCRIBE_STREAM].", show_default=False),
]
GroupOpt = Annotated[
    str | None,
    typer.Option("--group", help="Consumer group [env TRADESCRIBE_GROUP].", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON, for scripts.")]
PartitionsOpt = Annotated[
    int | None,
    typer.Option(
        "--partitions",
        min=1,
        help="Partition streams the workers share [env TRADESCRIBE_PARTITIONS].",
        show_default=False,
    ),
]
