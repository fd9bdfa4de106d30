"""The shared back-off: delays grow by a factor up to a cap and start over after a success."""

from __future__ import annotations

import pytest

from contracts.backoff import Backoff


def test_delays_grow_by_the_factor_up_to_the_cap() -> None:
    backoff = Backoff(first=0.05, factor=2.0, cap=0.5)
    assert [backoff.next() for _ in range(6)] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5, 0.5])


def test_reset_after_a_success_starts_the_next_outage_short_again() -> None:
    backoff = Backoff(first=0.1, factor=3.0, cap=10.0)
    assert [backoff.next() for _ in range(3)] == pytest.approx([0.1, 0.3, 0.9])
    backoff.reset()
    assert backoff.next() == pytest.approx(0.1)


def test_a_first_delay_above_the_cap_waits_the_cap() -> None:
    # A worker configured with retry_max_s=0.01 must not wait 0.05 s on its first retry.
    backoff = Backoff(first=0.05, factor=2.0, cap=0.01)
    assert [backoff.next() for _ in range(2)] == [0.01, 0.01]
    backoff.reset()
    assert backoff.next() == 0.01


@pytest.mark.parametrize(
    ("first", "factor", "cap"),
    [(0, 2.0, 1.0), (0.1, 0.5, 1.0), (0.1, 2.0, 0), (float("nan"), 2, 1)],
)
def test_nonsense_settings_are_refused_with_what_is_needed(
    first: float, factor: float, cap: float
) -> None:
    with pytest.raises(ValueError, match=r"first > 0, cap > 0 and factor >= 1"):
        Backoff(first=first, factor=factor, cap=cap)
