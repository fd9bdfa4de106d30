"""Output that cannot hurt its reader: the one place every table and CSV writer goes through.

Event text comes from bots and legacy files, so it may hold anything. Two readers
can be hurt by it:

- a terminal, by control characters: ``ESC [ ... m`` recolours or hides text, other
  escape sequences set the window title or move the cursor; and by Rich markup
  (``[link=...]``), which a plain ``str`` cell would be parsed for. :func:`cell`
  turns a value into a ``rich.text.Text`` with every C0 and C1 control character
  removed (tab, line feed and carriage return become a space);
- a spreadsheet, by a CSV cell starting with ``=``, ``+``, ``-``, ``@``, tab or
  carriage return, which it evaluates as a formula (``=HYPERLINK(...)``,
  ``+cmd|' /C calc'!A0``). :func:`csv_cell` prefixes such a text cell with a single
  quote (OWASP's advice). Numbers stay numbers: an ``int`` or ``float`` is written
  as it is, and so is text that is a plain decimal number such as ``-103.5``.

And numbers without binary noise: :func:`clean` rounds the projections' REAL values to
:data:`DECIMALS` places (``-187.7157000000011``, a P&L derived from prices, is
``-187.7157``), for ``serve``'s answers and ``query --json``/``--csv`` alike.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Sequence
from itertools import repeat
from operator import itemgetter
from typing import Any, TextIO

from rich.text import Text

_SPACE = str.maketrans({"\t": " ", "\n": " ", "\r": " "})
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def terminal_text(value: object) -> str:
    """``value`` as text with no control character left (C0, DEL, C1, so no ESC)."""
    return _CONTROL.sub("", str(value).translate(_SPACE))


def cell(value: object) -> Text:
    """A table cell that shows ``value``'s characters and nothing else (no markup, no
    escape sequences)."""
    return Text(terminal_text("" if value is None else value))


_NUMBERS = frozenset({int, float, bool, type(None)})


def csv_cell(value: Any) -> Any:
    """``value`` as a CSV cell a spreadsheet shows and never evaluates."""
    if type(value) in _NUMBERS:  # most cells: nothing to neutralise
        return value
    if isinstance(value, dict | list):
        value = json.dumps(value)
    formula = isinstance(value, str) and value.startswith(_FORMULA_START)
    return "'" + value if formula and not _DECIMAL.fullmatch(value) else value


_UNESCAPED_BY_JSON = re.compile("[\x7f-\x9f]")


def json_text(value: Any, **options: Any) -> str:
    """JSON for a terminal: non-ASCII text stays readable, but DEL and the C1 controls
    (which ``json.dumps`` leaves raw; C0 it escapes) are written as ``\\u00XX``, so the
    document means the same and prints no control sequence."""
    text = json.dumps(value, ensure_ascii=False, **options)
    return _UNESCAPED_BY_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def write_csv(out: TextIO, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A header and rows, every cell through :func:`csv_cell`, as ``csv.writer`` writes
    them (``excel``: ``,``, ``"``, ``\r\n``, minimal quoting)."""
    writer = csv.writer(out)
    writer.writerow([csv_cell(c) for c in columns])
    table = list(rows)
    body = _body(table)
    if body is not None:
        out.write(body)
        return
    plain = _NUMBERS
    for row in table:
        # numbers, and text that cannot start a formula, are what csv_cell returns them
        # as: tested here without a call per cell
        writer.writerow([v if type(v) in plain or (type(v) is str and not v.startswith(
            _FORMULA_START)) else csv_cell(v) for v in row])  # fmt: skip


_PLAIN = frozenset({str, int, float, bool, type(None)})
_FORMULA_CELL = re.compile("\x00[=+\\-@\t\r]")  # in "\x00" + "\x00".join(cells)
_QUOTED = (",", '"', "\r", "\n")  # csv.writer quotes a field holding one of these


def _body(rows: list[Sequence[Any]]) -> str | None:
    """The rows' lines as :func:`write_csv` writes them, made a column at a time (a
    1,000-row page has 17,000 cells: written cell by cell with ``csv.writer`` they were
    a third of a CSV page's time): each column's text from a few calls over the whole
    column, the lines joined at the end. None for rows it does not do (fewer than two
    cells, rows of different lengths, cells of other types), which ``csv.writer``
    writes."""
    if not rows or set(map(len, rows)) != {width := len(rows[0])} or width < 2:
        return None  # csv.writer writes a row of one empty cell as ""
    texts = [_column_text(column) for column in zip(*rows, strict=True)]
    if any(t is None for t in texts):
        return None
    return "\r\n".join(map(",".join, zip(*texts, strict=True))) + "\r\n"


def _column_text(column: tuple[Any, ...]) -> list[str] | None:
    """Each cell of ``column`` as :func:`write_csv` writes it, or None for a cell of a
    type it does not do (a subclass, or another type that is not JSON)."""
    kinds = set(map(type, column))
    if not kinds <= _PLAIN:  # dicts and lists: their JSON text
        column = tuple(map(csv_cell, column))
        kinds = set(map(type, column))
        if not kinds <= _PLAIN:
            return None
    texts = _texts(column, kinds)
    if str not in kinds:
        return texts  # numbers and None: nothing to neutralise or quote
    # One text of the column in which every cell starts after a NUL: no cell may start
    # a formula or needs quotes unless this text shows one (or a NUL inside a cell).
    joined = "\x00" + "\x00".join(texts)
    if _FORMULA_CELL.search(joined) or any(c in joined for c in _QUOTED):
        return list(map(_quoted, _texts(tuple(map(csv_cell, column)), kinds)))
    return texts


def _texts(column: tuple[Any, ...], kinds: set[type]) -> list[str]:
    """The plain cells of ``column`` as csv.writer writes them before quoting: None as
    nothing, a number as str() does."""
    if kinds == {str}:
        return list(column)
    if type(None) not in kinds and str not in kinds:
        return list(map(str, column))
    return ["" if v is None else v if type(v) is str else str(v) for v in column]


def _quoted(text: str) -> str:
    """``text`` as csv.writer writes a field: in quotes, doubled inside, if it holds a
    comma, a quote or a line break."""
    if any(c in text for c in _QUOTED):
        return '"' + text.replace('"', '""') + '"'
    return text


# JSON numbers: the projections hold REAL; ten decimals drop the binary noise
# (0.1 + 0.2) and keep every digit a price or P&L was sent with.
DECIMALS = 10

_AS_IS = frozenset({str, int, bool, type(None)})  # cells clean() returns untouched


def _clean_float(value: float) -> float | None:
    if not math.isfinite(value):
        return None
    rounded = round(value, DECIMALS)
    return 0.0 if rounded == 0 else rounded


def clean(value: Any) -> Any:
    """Floats rounded to ``DECIMALS`` (no 0.30000000000000004), recursively. The plain
    types are tested first, by ``type``: a page of 1,000 rows has 17,000 cells, and a
    list of rows is cleaned a column at a time (:func:`_clean_rows`)."""
    kind = type(value)
    if kind in _AS_IS:
        return value
    if kind is float:
        return _clean_float(value)
    if kind is dict:
        return {k: v if type(v) in _AS_IS else clean(v) for k, v in value.items()}
    if kind is list:
        if value and type(value[0]) is dict:
            return _clean_rows(value)
        return [v if type(v) in _AS_IS else clean(v) for v in value]
    if isinstance(value, float):  # subclasses, as before
        return _clean_float(value)
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def _clean_rows(rows: list[Any]) -> list[Any]:
    """``[clean(row) for row in rows]`` for rows that are dicts with the same keys, done
    a column at a time: a column of plain cells (most of them) is passed over with one
    ``set(map(type, ...))``, and a column of floats is rounded by ``map`` without a call
    of Python code per cell (cell by cell, the walk was a third of a CSV page's time).
    The rows are copied and only the changed cells written over, so each keeps its own
    order of keys."""
    keys = tuple(rows[0])
    if len(keys) < 2 or set(map(type, rows)) != {dict} or set(map(len, rows)) != {len(keys)}:
        return [clean(row) for row in rows]  # itemgetter(one key) gives no tuple
    try:
        columns = zip(*map(itemgetter(*keys), rows), strict=True)
    except KeyError:  # the same number of keys, not the same keys
        return [clean(row) for row in rows]
    out = list(map(dict.copy, rows))
    for key, column in zip(keys, columns, strict=True):
        kinds = set(map(type, column))
        if kinds <= _AS_IS:
            continue
        for row, cell in zip(out, _clean_column(column, kinds), strict=True):
            row[key] = cell
    return out


def _clean_column(column: tuple[Any, ...], kinds: set[type]) -> list[Any]:
    """``[clean(cell) for cell in column]``; ``kinds`` are the types of its cells."""
    if kinds == {float}:
        rounded = list(map(round, column, repeat(DECIMALS)))
        if 0.0 in rounded or not all(map(math.isfinite, rounded)):
            return list(map(_clean_float, column))  # -0.0, 0.0, a NaN or an infinity
        return rounded  # what _clean_float gives each: finite, rounded, not zero
    return [v if type(v) in _AS_IS else clean(v) for v in column]
