"""The tables are a function of the log on SQLite: the stateful property of
``tests/logmodel.py`` (its docstring says what it publishes, delivers and checks).

``TRADESCRIBE_PROPERTY_EXAMPLES`` sets how many sequences to try (CI: 25; a longer run:
``TRADESCRIBE_PROPERTY_EXAMPLES=2000 .venv/bin/pytest tests/test_log_invariant.py``).
"""

from __future__ import annotations

import pytest

from tests.logmodel import EXAMPLES, Scribe

pytestmark = pytest.mark.timeout(max(120, EXAMPLES))  # about 0.3 s an example

test_tables_are_a_function_of_the_log = Scribe.TestCase
