"""A page's rows are cleaned (``worker/http/reads.py`` ``clean``) and written as CSV
(``worker/cli/output.py`` ``write_csv``) a column at a time; every answer is, byte for
byte, what the cell-by-cell code that came before gave. That code is kept here
(``old_clean``, ``old_write_csv``) and both are held to it: over generated values, and
over the pages ``serve`` answers on a database of awkward rows."""

from __future__ import annotations

import csv
import io
import json
import math
import sqlite3
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import readdata
from tests.helpers import make_settings
from tests.querydata import seeded
from tests.servefix import token
from worker.cli import output
from worker.cli.output import _FORMULA_START, _NUMBERS, DECIMALS, clean, csv_cell
from worker.embedded import EmbeddedRedis
from worker.http import answers, app, reads, seed
from worker.http.app import ServeConfig, create_app

# --- the code before: a cell at a time ----------------------------------------------

_OLD_AS_IS = frozenset({str, int, bool, type(None)})


def _old_clean_float(value: float) -> float | None:
    if not math.isfinite(value):
        return None
    rounded = round(value, DECIMALS)
    return 0.0 if rounded == 0 else rounded


def old_clean(value: Any) -> Any:
    kind = type(value)
    if kind in _OLD_AS_IS:
        return value
    if kind is float:
        return _old_clean_float(value)
    if kind is dict:
        return {k: v if type(v) in _OLD_AS_IS else old_clean(v) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _OLD_AS_IS else old_clean(v) for v in value]
    if isinstance(value, float):
        return _old_clean_float(value)
    if isinstance(value, dict):
        return {k: old_clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [old_clean(v) for v in value]
    return value


def old_write_csv(out: Any, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    writer = csv.writer(out)
    writer.writerow([csv_cell(c) for c in columns])
    for row in rows:
        writer.writerow([v if type(v) in _NUMBERS or (type(v) is str and not v.startswith(
            _FORMULA_START)) else csv_cell(v) for v in row])  # fmt: skip


# --- what the answers may hold ------------------------------------------------------


class Price(float):
    pass


class Label(str):
    pass


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down, keys in the same order, floats of
    the same bits (-0.0 is not 0.0, a NaN is itself)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return math.copysign(1, a) == math.copysign(1, b) and (a == b or (a != a and b != b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(map(same, a, b))
    return bool(a == b)


floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 0.1 + 0.2, -1e-12, 1e-11, 4.99999999995e-11, 1e300, -1.7e308,
                     5e-324, 2.0**53 + 1, 123456.78900000001, -103.78499999999985]),
    st.floats(-1e6, 1e6).map(lambda x: round(x, 12)),
)  # fmt: skip
texts = st.one_of(
    st.text(max_size=8),
    st.text(alphabet="=+-@\t\r\n,\" '.0123456789e\x00aé", max_size=6),
    st.sampled_from(["-103.5", "=1+1", "+cmd|' /C calc'!A0", "@SUM(1)", "-x", "", "a,b",
                     'say "hi"', "line\nbreak", "1e5", ".5", "-inf"]),
)  # fmt: skip
scalars = st.one_of(
    floats,
    floats.map(Price),
    texts,
    texts.map(Label),
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.none(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=3), inner, max_size=4),
        st.tuples(inner),
    ),
    max_leaves=12,
)
KEYS = ["source", "trade_id", "quantity", "price", "pnl", "fees", "attributes"]


@st.composite
def tables(draw: st.DrawFn) -> list[Any]:
    """Rows as pages hold them: dicts with the same keys, each column of one kind or of
    a few, now and then a row with other keys, in another order, or not a dict."""
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=len(KEYS), unique=True))
    kinds = {k: draw(st.sampled_from([floats, texts, scalars, values])) for k in keys}
    rows: list[Any] = draw(
        st.lists(st.fixed_dictionaries({k: kinds[k] for k in keys}), min_size=1, max_size=8)
    )
    odd = draw(st.sampled_from(["none", "reordered", "other keys", "not a dict", "a float"]))
    if odd == "reordered" and len(rows) > 1:
        rows[-1] = dict(reversed(rows[-1].items()))
    elif odd == "other keys":
        rows.append(draw(st.dictionaries(st.sampled_from(KEYS), scalars, max_size=len(keys))))
    elif odd == "not a dict":
        rows.append(draw(scalars))
    elif odd == "a float":
        rows.insert(1, draw(floats))
    return rows


# --- clean ------------------------------------------------------------------------


@settings(max_examples=800, deadline=None)
@given(values)
def test_clean_gives_what_the_cell_by_cell_clean_gave(value: Any) -> None:
    assert same(clean(value), old_clean(value))


@settings(max_examples=800, deadline=None)
@given(tables())
def test_clean_of_rows_gives_what_the_cell_by_cell_clean_gave(rows: list[Any]) -> None:
    before = json.dumps(rows, default=repr)
    assert same(clean(rows), old_clean(rows))
    assert json.dumps(rows, default=repr) == before  # the rows given are not changed


def test_a_column_of_floats_is_cleaned_cell_by_cell_where_rounding_gives_zero() -> None:
    rows = [{"a": "x", "pnl": v} for v in (1.5, -1e-12, float("nan"), -0.0, float("inf"))]
    assert [str(r["pnl"]) for r in clean(rows)] == ["1.5", "0.0", "None", "0.0", "None"]


# --- CSV --------------------------------------------------------------------------


def csv_text(write: Any, columns: Sequence[str], rows: list[Any]) -> str:
    out = io.StringIO()
    write(out, columns, [row.values() if isinstance(row, dict) else row for row in rows])
    return out.getvalue()


@settings(max_examples=800, deadline=None)
@given(tables())
def test_csv_is_what_csv_writer_wrote_cell_by_cell(rows: list[Any]) -> None:
    rows = [row if isinstance(row, dict) else {"value": row} for row in rows]
    columns = list(rows[0])
    old = csv_text(old_write_csv, columns, rows)
    assert csv_text(output.write_csv, columns, rows) == old
    cleaned = old_clean(rows)
    assert csv_text(output.write_csv, columns, cleaned) == csv_text(old_write_csv, columns, cleaned)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(scalars, min_size=2, max_size=2), min_size=1, max_size=6))
def test_csv_of_lists_of_cells_is_what_csv_writer_wrote(rows: list[list[Any]]) -> None:
    assert csv_text(output.write_csv, ["a", "b"], rows) == csv_text(old_write_csv, ["a", "b"], rows)


# --- the pages serve answers ------------------------------------------------------

AWKWARD = [  # (realized_pnl, fees, exit_reason: formulas, strategy: quotes needed)
    (0.1 + 0.2, -0.0, "=1+1", "a,b"),
    (-103.78499999999985, 5e-324, "-103.5", 'say "hi"'),
    (1e300, float("inf"), "+cmd|' /C calc'!A0", "line\nbreak"),
    (-1e-12, float("-inf"), "@SUM(1)", '=HYPERLINK("http://x")'),
    (2.0**53 + 1, 123456.78900000001, "\tindent", "carriage\rreturn"),
    (4.99999999995e-11, -5e-11, "", "-x"),
]


def awkward_db(path: Path) -> Path:
    """``bench.readdata``'s database of 2,400 closed trades, some of them given floats
    that rounding changes and text a spreadsheet would evaluate or that needs quotes."""
    readdata.build(path, 2400)
    con = sqlite3.connect(path)
    with con:
        newest = [r[0] for r in con.execute(
            "SELECT rowid FROM trades WHERE account = 'ACC-1' AND status = 'closed'"
            " ORDER BY closed_at DESC LIMIT 60")]  # fmt: skip
        for n, rowid in enumerate(newest[::3]):
            con.execute(
                "UPDATE trades SET realized_pnl = ?, fees = ?, exit_reason = ?, strategy = ?"
                " WHERE rowid = ?",
                (*AWKWARD[n % len(AWKWARD)], rowid),
            )
        # an infinity in one column of floats, none in the other (realized_pnl's zeros)
        con.execute("UPDATE trades SET exit_price = ? WHERE rowid = ?", (math.inf, newest[1]))
    con.close()
    return path


PAGES = [
    "/api/v1/history?limit=1000", "/api/v1/history?limit=1000&format=csv",
    "/api/v1/history?symbol=btc&format=csv", "/api/v1/history?since=2025-01-01&limit=5",
    "/api/v1/active-trades?format=csv", "/api/v1/active-trades",
    "/api/v1/active-signals?format=csv", "/api/v1/active-signals",
    "/api/v1/positions?format=csv", "/api/v1/positions", "/api/v1/closed-today?format=csv",
    "/api/v1/journal?date=2026-11-17&format=csv", "/api/v1/journal?date=2026-11-18",
    "/api/v1/journal?date=2026-11-18&format=csv", "/api/v1/daily-loss?format=csv",
    "/api/v1/daily-loss?date=2026-11-18&format=csv", "/api/v1/closed-today?kind=signals",
    "/api/v1/strategies?format=csv", "/api/v1/plugins?format=csv", "/api/v1/plugins",
    "/api/v1/pnl?tz=Europe/Berlin", "/api/v1/calendar?tz=Europe/Berlin&format=csv",
    "/api/v1/trade?trade_id=T2", "/api/v1/bots", "/api/v1/bots?format=csv",
    "/api/trades?format=csv", "/api/trades", "/api/daily-stats?format=csv",
    "/api/cumulative-pnl?format=csv", "/api/pnl-calendar?format=csv",
]  # fmt: skip


def bodies(db: Path, tokens: Path, secrets: list[str]) -> dict[str, bytes]:
    """Every page of :data:`PAGES` for each token, from the ASGI app in this process."""
    asgi, _ = create_app(ServeConfig(db, tokens))

    async def get(target: str, secret: str) -> bytes:
        path, _, query = target.partition("?")
        scope = {"type": "http", "http_version": "1.1", "method": "GET", "path": path,
                 "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
                 "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1),
                 "headers": [(b"authorization", f"Bearer {secret}".encode())]}  # fmt: skip
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await asgi(scope, receive, send)
        assert sent[0]["status"] == 200, (target, sent)
        return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")

    async def every() -> dict[str, bytes]:
        return {f"{n} {t}": await get(t, s) for n, s in enumerate(secrets) for t in PAGES}

    return anyio.run(every)


@pytest.fixture(scope="module")
def seeded_db(tmp_path_factory: pytest.TempPathFactory, redis_server: EmbeddedRedis) -> Path:
    """tests/querydata.py's history (journal text, attributes, signals, positions),
    stored by a real worker."""
    tmp = tmp_path_factory.mktemp("pages")
    tag = uuid.uuid4().hex[:10]
    names = {"stream": f"test:{tag}:events", "group": f"g-{tag}", "consumer": f"c-{tag}"}
    settings = make_settings(tmp / "scribe.db", redis_server.url, names)
    anyio.run(seeded, settings)
    return settings.db


def pages_now_and_before(db: Path, tmp_path: Path) -> dict[str, bytes]:
    """Every page for an admin and a tenant of ACC-1, asserted to be what the app with
    the cell-by-cell code answered, byte for byte."""
    tokens = tmp_path / "tokens.db"
    secrets = [token(tokens, "admin", admin=True), token(tokens, "tenant", "ACC-1")]
    now = bodies(db, tokens, secrets)
    with pytest.MonkeyPatch.context() as m:
        for module in (reads, seed, answers.reads, app.reads):
            m.setattr(module, "clean", old_clean)
        m.setattr(output, "write_csv", old_write_csv)
        was = bodies(db, tokens, secrets)
    assert now.keys() == was.keys()
    for page, body in now.items():
        assert body == was[page], page
    return now


def test_pages_of_awkward_rows_are_byte_for_byte_what_they_were(tmp_path: Path) -> None:
    now = pages_now_and_before(awkward_db(tmp_path / "read.db"), tmp_path)
    csv_page = now["1 /api/v1/history?limit=1000&format=csv"]
    assert csv_page.count(b"\r\n") == 1001  # a full page of the tenant's, header first
    assert b",'=1+1," in csv_page
    assert b'"\'=HYPERLINK(""http://x"")"' in csv_page
    assert b'"a,b"' in csv_page
    assert b",0.3," in csv_page


def test_pages_of_every_kind_of_row_are_byte_for_byte_what_they_were(
    seeded_db: Path, tmp_path: Path
) -> None:
    now = pages_now_and_before(seeded_db, tmp_path)
    assert b"closed T2 at 110" in now["0 /api/v1/journal?date=2026-11-17&format=csv"]
