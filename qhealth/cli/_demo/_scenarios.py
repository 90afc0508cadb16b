"""The demo's scenarios: one workload and one API limit per condition to show.

Each scenario is tuned so that the naive pool shows its condition within the
demo's short window, and says honestly what the reference pool does: where a
condition comes from the pool's code (polling, stampedes), the reference pool
avoids it; where it comes from the load itself (more work than the API allows,
or far less than the pool can do), no pool code can, and both show it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._workload import Workload


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    title: str
    """One line: what the scenario shows."""
    workload: Workload
    rate_limit: float
    """The API's limit, calls/s (``--rate-limit`` overrides it)."""
    latency_s: float
    """Mean time the API takes to serve a call."""
    poll_interval_s: float
    """How long the naive workers sleep between drains."""
    naive_shows: tuple[str, ...]
    reference_shows: tuple[str, ...]
    """Empty: healthy."""


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            name="boom-bust",
            title="bursty traffic: pollers sleep in step while work piles up, then stampede the API",
            workload=Workload(rate=8.0, burst_size=30, burst_every_s=10.0, burst_spread_s=2.0),
            rate_limit=20.0,
            latency_s=0.25,
            poll_interval_s=3.0,
            naive_shows=("boom_bust", "rate_limited"),
            reference_shows=(),
        ),
        Scenario(
            name="rate-limit",
            title="a tight API limit: synchronised pollers and immediate retries set off 429 storms",
            workload=Workload(rate=5.0, burst_size=12, burst_every_s=10.0, burst_spread_s=2.0),
            rate_limit=10.0,
            latency_s=0.5,
            poll_interval_s=2.0,
            naive_shows=("rate_limited",),
            reference_shows=(),
        ),
        Scenario(
            name="overflow",
            title="more work than the API allows: every pool falls behind; only one of them storms",
            workload=Workload(rate=24.0, burst_size=20, burst_every_s=10.0, burst_spread_s=2.0),
            rate_limit=20.0,
            latency_s=0.25,
            poll_interval_s=3.0,
            naive_shows=("overflow", "rate_limited"),
            reference_shows=("overflow",),
        ),
        Scenario(
            name="idle",
            title="a trickle of work: ten workers paid for, almost all of them idle",
            workload=Workload(rate=0.3),
            rate_limit=20.0,
            latency_s=0.25,
            poll_interval_s=3.0,
            naive_shows=("idle",),
            reference_shows=("idle",),
        ),
    )
}

DEFAULT_SCENARIO = "boom-bust"
