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
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Sequence
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
    """A header and rows, every cell through :func:`csv_cell`."""
    writer = csv.writer(out)
    writer.writerow([csv_cell(c) for c in columns])
    plain = _NUMBERS
    for row in rows:
        # numbers, and text that cannot start a formula, are what csv_cell returns them
        # as: tested here without a call per cell (a 1,000-row page has 17,000 cells)
        writer.writerow([v if type(v) in plain or (type(v) is str and not v.startswith(
            _FORMULA_START)) else csv_cell(v) for v in row])  # fmt: skip
