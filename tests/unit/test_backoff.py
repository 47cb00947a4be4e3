"""The agent's one back-off formula."""

from __future__ import annotations

from spored.backoff import next_delay


def test_doubles_from_the_minimum_up_to_the_maximum() -> None:
    delays, delay = [], 0.0
    for _ in range(6):
        delay = next_delay(delay, 30.0, 300.0)
        delays.append(delay)
    assert delays == [30.0, 60.0, 120.0, 240.0, 300.0, 300.0]


def test_a_maximum_below_the_minimum_wins() -> None:
    """A configured refresh interval shorter than the minimum back-off caps it (DescribeTags)."""
    assert next_delay(0.0, 30.0, 10.0) == 10.0
