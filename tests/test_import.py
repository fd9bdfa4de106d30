"""`tradescribe import`: legacy files become events once, however often they are imported."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from rich.console import Console

from tests.helpers import (
    count,
    make_settings,
    pending,
    query,
    run_cli,
    run_cli_in_thread,
    running_worker,
    wait_for,
)
from tests.pgfix import create_database_sync
from tests.querydata import stored_events
from worker.importers import FORMATS, ImportContext
from worker.importers.run import Report, collect, progress_bar, publish
from worker.settings import Settings

LEGACY = Path(__file__).parent / "fixtures" / "legacy"

# format -> (arguments, records read, valid events, skipped records)
CASES = {
    "csv-trades": ([str(LEGACY / "trades.csv")], 23, 34, 3),
    "pnl-json": (
        [str(LEGACY / "pnl_data" / "daily_pnl.json"), str(LEGACY / "pnl_data" / "daily_pnl.csv")],
        24,
        66,
        4,
    ),
    "sqlite-legacy": (
        [str(LEGACY / "trading_bot.db"), "--mapping", str(LEGACY / "plugin_map.toml")],
        42,
        56,
        4,
    ),
    "plays": ([str(LEGACY / "plays")], 19, 60, 3),
    "csv": (
        [str(LEGACY / "other_bot.csv"), "--mapping", str(LEGACY / "other_bot.toml")],
        18,
        26,
        3,
    ),
}


def importing(settings: Settings, fmt: str, *args: str) -> list[str]:
    return [
        "import", fmt, *(args or CASES[fmt][0]),
        "--redis-url", settings.redis_url, "--db", str(settings.database_url or settings.db),
        "--stream", settings.stream, "--wait-s", "20",
    ]  # fmt: skip


@pytest.mark.parametrize("fmt", list(CASES))
async def test_importing_a_format_twice_stores_its_records_once(
    settings: Settings, fmt: str
) -> None:
    _, read, events, skipped = CASES[fmt]
    async with running_worker(settings):
        first = await run_cli_in_thread(*importing(settings, fmt), "--allow-skips", "--json")
        assert first.code == 0, first.out + first.err
        report = first.json()
        assert (report["records_read"], report["events"], len(report["skipped"])) == (
            read,
            events,
            skipped,
        )
        assert (report["published"], report["committed"], report["dead_lettered"]) == (
            events,
            events,
            0,
        )
        assert count(settings.db, "events") == events

        second = await run_cli_in_thread(*importing(settings, fmt), "--allow-skips", "--json")
        assert second.code == 0, second.out + second.err
        again = second.json()
        assert (again["already_stored"], again["published"], again["committed"]) == (
            events,
            0,
            events,
        )
    assert count(settings.db, "events") == events
    assert count(settings.db, "dead_letters") == 0


async def test_skipped_records_fail_the_import_and_name_file_line_and_reason(
    settings: Settings,
) -> None:
    async with running_worker(settings):
        result = await run_cli_in_thread(*importing(settings, "csv-trades"))
    assert result.code == 1
    assert f"skipped {LEGACY / 'trades.csv'}:22: 'n/a' is not a number" in result.out
    assert f"{LEGACY / 'trades.csv'}:23: status 'PENDING?'" in result.out
    assert "FAILED: 3 record(s) skipped" in result.out
    # The valid records were still stored: nothing is lost, and a re-run adds nothing.
    assert count(settings.db, "events") == 34


def test_dry_run_validates_and_publishes_nothing(
    settings: Settings, sync_redis: redis.Redis
) -> None:
    result = run_cli(*importing(settings, "plays"), "--dry-run", "--allow-skips")
    assert result.code == 0, result.out + result.err
    assert "dry run: nothing published" in result.out
    assert "│ events (valid)        │ 60 │" in result.out
    assert "│ published" not in result.out
    assert "OK: all 60 valid events would be published (3 skipped records allowed)" in result.out
    assert sync_redis.exists(settings.stream) == 0


def test_import_without_a_worker_reports_the_events_it_could_not_see_committed(
    settings: Settings,
) -> None:
    args = importing(settings, "csv", str(LEGACY / "other_bot.csv"))
    args[args.index("20")] = "0.2"
    result = run_cli(*args, "--mapping", str(LEGACY / "other_bot.toml"), "--allow-skips")
    assert result.code == 1
    assert "FAILED: committed 0 of 26 events (26 not seen in the database" in result.out
    assert "is the worker running" in result.out


async def test_sqlite_legacy_maps_logic_type_to_plugin_id_with_the_toml_override(
    settings: Settings,
) -> None:
    async with running_worker(settings):
        result = await run_cli_in_thread(*importing(settings, "sqlite-legacy"), "--allow-skips")
        assert result.code == 0, result.out + result.err
    rows = query(
        settings.db,
        "SELECT plugin_id, count(*) FROM trades WHERE source = 'legacy.sqlite-legacy' "
        "GROUP BY plugin_id ORDER BY plugin_id",
    )
    assert rows == [
        ("legacy", 4),  # logic_type NULL
        ("v3-logic-01-5min", 4),  # seed 004's default table
        ("v3-logic-01-5min-renamed", 4),  # LOGIC1, overridden by plugin_map.toml
        ("v3-logic-02-15min", 4),
        ("v3-logic-03-1h", 4),
        ("x-plugin", 4),  # custom-x, added by plugin_map.toml
    ]
    closed = query(settings.db, "SELECT count(*) FROM trades WHERE status = 'closed'")
    assert closed == [(18,)]
    audits = query(settings.db, "SELECT action, count(*) FROM audit_log GROUP BY 1 ORDER BY 1")
    assert audits == [
        ("legacy.reentry_chains", 4),
        ("legacy.sl_events", 5),
        ("legacy.system_state", 2),
        ("legacy.trading_sessions", 3),
    ]


async def test_plays_keep_their_status_history(settings: Settings) -> None:
    async with running_worker(settings):
        result = await run_cli_in_thread(*importing(settings, "plays"), "--allow-skips")
        assert result.code == 0, result.out + result.err
    statuses = query(settings.db, "SELECT status, count(*) FROM trades GROUP BY 1 ORDER BY 1")
    assert statuses == [("closed", 4), ("expired", 4), ("open", 4), ("pending", 4)]
    history = query(
        settings.db,
        "SELECT group_concat(status, '>') FROM (SELECT status FROM trade_status_history "
        "WHERE trade_id = '00000000-0000-4000-8000-000000000002' ORDER BY ts, event_type)",
    )
    assert history == [("pending>pending>open>open>closed>closed",)]


def test_event_ids_depend_on_file_and_row_not_on_the_run(tmp_path: Path) -> None:
    def ids(path: Path) -> list[str]:
        ctx = ImportContext("csv-trades", "legacy.csv-trades")
        report = Report("csv-trades", [str(path)], dry_run=True)
        with progress_bar(Console()) as bar:
            return [e.id for e in collect("csv-trades", [path], ctx, bar, report)]

    original = LEGACY / "trades.csv"
    copy = tmp_path / "trades.csv"
    copy.write_bytes(original.read_bytes())
    assert ids(original) == ids(original)
    assert set(ids(original)).isdisjoint(ids(copy))  # another file is another identity
    assert set(FORMATS) == {"csv-trades", "pnl-json", "sqlite-legacy", "plays", "csv"}


def test_unknown_format_is_one_clear_line(settings: Settings) -> None:
    result = run_cli("import", "excel", str(LEGACY / "trades.csv"))
    assert result.code == 1
    assert result.err.strip() == (
        "error: unknown format 'excel'; use one of: csv-trades, pnl-json, sqlite-legacy, plays, csv"
    )


async def test_republished_import_events_are_refused_by_the_event_log(
    settings: Settings, sync_redis: redis.Redis
) -> None:
    """A second publish of the same records (e.g. from a host that cannot read the
    database, so it cannot skip what is stored) adds no row: the ids are the same."""
    ctx = ImportContext("plays", "legacy.plays")
    report = Report("plays", [], dry_run=False)
    with progress_bar(Console()) as bar:
        events = collect("plays", [LEGACY / "plays"], ctx, bar, report)
        async with running_worker(settings):
            for _ in range(2):
                assert publish(sync_redis, settings.stream, events, bar) == 60
            names = {"stream": settings.stream, "group": settings.group}

            def all_read() -> bool:
                last = sync_redis.xinfo_stream(settings.stream)["last-generated-id"]
                group = sync_redis.xinfo_groups(settings.stream)[0]
                return bool(group["last-delivered-id"] == last and pending(sync_redis, names) == 0)

            await wait_for(all_read, what="both copies read and acknowledged")
    assert count(settings.db, "events") == 60
    assert count(settings.db, "trades") == 16
    assert count(settings.db, "dead_letters") == 0


def test_a_missing_or_bad_mapping_file_is_one_clear_line(tmp_path: Path) -> None:
    csv_file = str(LEGACY / "other_bot.csv")
    missing = run_cli("import", "csv", csv_file, "--dry-run")
    assert missing.code == 1
    assert missing.err.strip() == (
        "error: the csv format needs a TOML file mapping its columns to fields "
        "(give it with --mapping FILE)"
    )
    bad = tmp_path / "bad.toml"
    bad.write_text('type = "trade"\n')
    wrong = run_cli("import", "csv", csv_file, "--mapping", str(bad), "--dry-run")
    assert wrong.code == 1
    assert f"error: mapping file {bad} needs a [columns] table" in wrong.err


def test_a_one_megabyte_csv_field_is_a_skipped_record_with_its_line(tmp_path: Path) -> None:
    lines = (LEGACY / "trades.csv").read_text().splitlines()
    huge = lines[2].replace(",time,31,,", ",time,31," + "x" * 1_000_000 + ",")
    path = tmp_path / "trades.csv"
    path.write_text("\n".join([lines[0], lines[1], huge, lines[3]]) + "\n")
    result = run_cli("import", "csv-trades", str(path), "--dry-run", "--json")
    assert result.code == 1, result.err
    report = result.json()
    assert report["skipped"] == [
        {"where": f"{path}:3", "reason": "unreadable CSV record: field larger than field "
         "limit (131072)"}
    ]  # fmt: skip
    assert report["records_read"] == 3
    assert report["events"] > 0


@pytest.mark.parametrize("fmt", ["pnl-json", "plays"])
def test_json_nested_100000_deep_is_a_skipped_record_with_its_line(
    tmp_path: Path, fmt: str
) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{"records":\n\n' + "[" * 100_000 + "]" * 100_000 + "\n}\n")
    result = run_cli("import", fmt, str(path), "--dry-run", "--json")
    assert result.code == 1, result.err
    assert "Traceback" not in result.err
    assert result.json()["skipped"] == [
        {"where": f"{path}:3", "reason": "JSON nested too deeply (more than 500 levels here)"}
    ]


async def test_import_without_db_verifies_through_the_worker(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --db here: the worker that committed every event says so over the request
    channel, instead of the import waiting for a database file it cannot see."""
    monkeypatch.delenv("TRADESCRIBE_DB", raising=False)
    monkeypatch.setenv("TRADESCRIBE_GROUP", settings.group)
    args = ["import", "csv-trades", str(LEGACY / "trades.csv"), "--redis-url",
            settings.redis_url, "--stream", settings.stream, "--wait-s", "10",
            "--allow-skips", "--json"]  # fmt: skip
    async with running_worker(settings):
        first = await run_cli_in_thread(*args)
        again = await run_cli_in_thread(*args)
    assert first.code == 0, first.out + first.err
    report = first.json()
    assert (report["verified_by"], report["committed"], report["dead_lettered"]) == (
        "worker",
        34,
        0,
    )
    assert again.code == 0
    assert again.json()["committed"] == 34
    assert count(settings.db, "events") == 34


def test_import_without_db_and_without_a_worker_says_no_worker_answered(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRADESCRIBE_DB", raising=False)
    monkeypatch.setenv("TRADESCRIBE_GROUP", settings.group)
    result = run_cli("import", "csv", str(LEGACY / "other_bot.csv"), "--mapping",
                     str(LEGACY / "other_bot.toml"), "--redis-url", settings.redis_url,
                     "--stream", settings.stream, "--wait-s", "5", "--allow-skips")  # fmt: skip
    assert result.code == 1
    assert "FAILED: could not verify the commits: no worker is listening on" in result.out


async def test_importing_into_postgresql_twice_stores_its_records_once(
    redis_url: str, names: dict[str, str], postgres_admin_url: str
) -> None:
    """The import looks up the ids PostgreSQL holds already, as it does in the file."""
    url = create_database_sync(postgres_admin_url)
    settings = make_settings(url, redis_url, names)  # type: ignore[arg-type]
    _, _, events, _ = CASES["csv-trades"]
    async with running_worker(settings):
        first = await run_cli_in_thread(
            *importing(settings, "csv-trades"), "--allow-skips", "--json"
        )
        assert first.code == 0, first.out + first.err
        assert (first.json()["published"], first.json()["committed"]) == (events, events)
        second = await run_cli_in_thread(
            *importing(settings, "csv-trades"), "--allow-skips", "--json"
        )
        assert second.code == 0, second.out + second.err
        assert (second.json()["already_stored"], second.json()["published"]) == (events, 0)
    assert stored_events(settings) == events
