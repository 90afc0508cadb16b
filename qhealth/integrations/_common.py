"""What every framework adapter shares: ending an item.

Kept apart so that each adapter module is only about its framework's hooks,
and so that there is one place deciding what a failed item counts as (a failure
always; a rate-limited call too when the shared 429 detector says so).
"""

from __future__ import annotations

from .._optional import require
from .._probe import Probe
from .._ratelimit import is_rate_limited

__all__ = ["item_ended", "require"]


def item_ended(probe: Probe, exc: BaseException | None, *, count_calls: bool) -> None:
    """Close one item a worker held: success, or failure.

    ``count_calls`` counts the item's run as one downstream call, and a run
    that raised a "rate limited" exception (the shared 429 detector) as one
    rate-limited call: right for pools where a task is one call to one API.
    Code that counts its own calls (``probe.attempted()``,
    ``probe.rate_limited()``) turns it off, so nothing is counted twice.
    """
    if exc is None:
        if count_calls:
            probe.attempted()
        probe.succeeded()
        return
    if count_calls:
        probe.attempted()
        if is_rate_limited(exc):
            probe.rate_limited()
    probe.failed()
