"""The agent's back-off after a failed call: one formula for every place that retries.

The first delay after a success is ``minimum``; each further failure doubles it, up to ``maximum``.
Used for DescribeTags when tags are not in metadata (daemon) and for the status tag write
(agent_status).
"""

from __future__ import annotations


def next_delay(previous: float, minimum: float, maximum: float) -> float:
    """The delay after one more failure, when the last delay was ``previous`` (0: none yet)."""
    return min(max(previous * 2, minimum), maximum)
