"""Event ids: canonical UUIDv7 text, strictly increasing within a process."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from contracts.ids import _build, event_id_time, new_event_id, stable_event_id


@given(
    unix_ms=st.integers(0, 2**48 - 1),
    rand_a=st.integers(0, 2**16 - 1),
    rand_b=st.integers(0, 2**64 - 1),
)
def test_an_id_is_the_uuid_modules_own_text_of_a_version_7_uuid(
    unix_ms: int, rand_a: int, rand_b: int
) -> None:
    text = _build(unix_ms, rand_a, rand_b)
    parsed = uuid.UUID(text)
    assert str(parsed) == text  # canonical: lower case, 8-4-4-4-12
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert parsed.int >> 80 == unix_ms
    assert (parsed.int >> 64) & 0xFFF == rand_a & 0xFFF
    assert parsed.int & (2**62 - 1) == rand_b & (2**62 - 1)


def test_new_ids_increase_and_carry_their_time() -> None:
    ids = [new_event_id() for _ in range(20_000)]  # many in one millisecond: the counter
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    when = event_id_time(ids[-1])
    assert when is not None
    assert abs((datetime.now(UTC) - when).total_seconds()) < 60


def test_a_stable_id_is_the_same_for_the_same_record() -> None:
    when = datetime(2024, 3, 1, 12, tzinfo=UTC)
    first = stable_event_id(when, "file.csv", "row-7")
    assert first == stable_event_id(when, "file.csv", "row-7")
    assert first != stable_event_id(when, "file.csv", "row-8")
    assert event_id_time(first) == when
