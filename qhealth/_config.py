"""Every tunable of the classifier, with its default, in one place.

All thresholds are relative to the pool itself (its capacity, its workers, its
own throughput and calls), never absolute depths or rates: the same defaults
judge a 10-slot queue and a 10,000-slot one. The one exception is the time an
item waits next to an idle worker, which is seconds by nature: a moment is
healthy, seconds cycle after cycle are boom-bust. Which measure each setting
applies to is written in ``qhealth/_measures.py``.

Each condition turns on when its measure over the whole window crosses the
``*_on`` threshold, and turns off only when the measure over the most recent
``clear_fraction`` of the window falls below the lower ``*_off`` threshold.
That band is the hysteresis: a pool hovering near a threshold does not flap
from tick to tick, and a condition that has ended clears within one window.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class ClassifierConfig:
    """Classifier settings. Override any of them by keyword::

    ClassifierConfig(window_s=120, idle_on=0.95)
    """

    # -- the window ----------------------------------------------------------
    window_s: float = 60.0
    """Seconds of samples each verdict is judged on."""
    min_window_intervals: int = 8
    """The window spans at least this many sampling intervals, so that coarse
    sampling still gives enough points (15 s samples -> a 120 s window)."""
    clear_fraction: float = 0.5
    """An active condition is re-judged on this most recent part of the window
    (against its ``*_off`` threshold) so that it clears within one window."""

    # -- stalled ---------------------------------------------------------------
    stalled_waiting_share: float = 0.9
    """Share of the window's samples that must show items waiting."""

    # -- overflow ------------------------------------------------------------
    overflow_near_capacity: float = 0.9
    """A depth at or above this share of capacity is "near capacity"."""
    overflow_full_on: float = 0.75
    """Share of samples near capacity that turns overflow on (bounded queues)."""
    overflow_full_off: float = 0.4
    overflow_backlog_share: float = 0.9
    """Growing backlog: share of samples that must show items waiting."""
    overflow_inflow_on: float = 1.05
    """Growing backlog: arrivals must exceed processing by this factor (when
    both are known); while active, the backlog is held until arrivals fall
    below ``overflow_inflow_off`` times processing or the depth falls."""
    overflow_inflow_off: float = 1.0
    overflow_growth_on: float = 0.05
    """Growing backlog: every depth in the last third of the window must exceed
    every depth in the first third, by at least this share of the items
    processed in the window."""

    # -- rate limited ----------------------------------------------------------
    rate_limited_on: float = 0.10
    """Share of downstream calls answered 429 that turns rate_limited on."""
    rate_limited_off: float = 0.05
    rate_limited_min_calls: int = 20
    """Fewer calls than this in the window are too few to judge a share on."""

    # -- boom-bust -------------------------------------------------------------
    boom_bust_idle_capacity_on: float = 0.10
    """How much: share of the pool's workers idle while items waited for them
    (mean of min(depth, idle workers) / workers over the samples). A blocking
    pool shows about 0; in-step pollers leave each cycle's pile-up next to
    sleeping workers, at any sampling phase."""
    boom_bust_idle_capacity_off: float = 0.05
    boom_bust_idle_wait_on: float = 0.09
    """How long, in seconds: an item's wait next to an idle worker, by
    Little's law. Consumers that back off for a moment, or many pollers out of
    step, keep it a fraction of this; a pool that sleeps in step keeps each
    cycle's arrivals waiting for much longer."""
    boom_bust_idle_wait_off: float = 0.05
    boom_bust_crowded_on: float = 0.25
    """How much, on its own: this share of the pool idle next to waiting work
    is boom-bust however short each wait (down to ``boom_bust_idle_wait_off``):
    fast pollers under heavy load leave many items waiting a moment each."""
    boom_bust_crowded_off: float = 0.125
    boom_bust_regular_on: float = 0.35
    """How often: with either of the above, the share of samples with items
    waiting next to an idle worker. In-step pollers leave work waiting for
    most of each cycle; a moment's wait in a small pool shows in a sample or
    two, and cannot carry a whole window."""
    boom_bust_regular_off: float = 0.2
    boom_bust_long_wait_on: float = 1.0
    """How long, on its own: items that wait this many seconds next to idle
    workers (Little's law) are boom-bust when they do so in at least
    ``boom_bust_waiting_idle_on`` of the samples and ``boom_bust_sightings_on``
    of them (cycle after cycle, not one burst seen twice), with
    ``boom_bust_idle_capacity_on`` of the pool idle next to them. Backing off
    for up to a second, as healthy consumers do, leaves waits of half that;
    batches that sit for a whole sleep of a light-loaded poller show here even
    when each one is seen in fewer samples than ``boom_bust_regular_on``."""
    boom_bust_long_wait_off: float = 0.5
    boom_bust_sightings_on: int = 5
    """With the long waits: samples in the window that show items waiting next
    to an idle worker."""
    boom_bust_sightings_off: int = 3
    boom_bust_busy_excess_on: float = 0.20
    """In step with the samples: share of workers busy at the sampling instants
    minus the share busy over time (from idle time). Sampling at a multiple of
    the poll period catches pollers at the same phase every time; a pool whose
    work follows no clock shows about 0."""
    boom_bust_busy_excess_off: float = 0.10
    boom_bust_waiting_idle_on: float = 0.20
    """With the busy excess: share of samples with items waiting next to an
    idle worker, which a blocking pool never shows."""
    boom_bust_waiting_idle_off: float = 0.10
    boom_bust_in_step_on: float = 0.35
    """The busy excess on its own: a pool caught this much busier at every
    sample than over time works in step with the sampling clock, even when no
    sample lands while its workers sleep."""
    boom_bust_in_step_off: float = 0.20
    boom_bust_in_step_floor_on: float = 0.15
    """...and most samples must show it: the 25th percentile of the sampled
    busy share at least this far above the share busy over time (a few
    samples that land on a bursty pool's bursts do not make it)."""
    boom_bust_in_step_floor_off: float = 0.08

    # -- idle --------------------------------------------------------------------
    idle_on: float = 0.90
    """Idle worker-time share (with the queue empty) that turns idle on."""
    idle_off: float = 0.80
    idle_empty_share: float = 0.9
    """Share of samples that must show no backlog: an empty queue, or fewer
    items than idle workers (an item caught between arrival and pickup)."""

    # -- recommendation ----------------------------------------------------------
    target_utilization: float = 0.7
    """Busy share the recommended worker count aims at (Little's law)."""
    min_workers: int = 1
    """The recommendation never goes below this."""

    # -- the downstream ----------------------------------------------------------
    downstream_limit: float = 0.0
    """The downstream's rate limit in calls per second for the whole pool (its
    documented limit, or the rate of the pool's own limiter), 0 when unknown.
    A pool that calls at this rate cannot go faster with more workers: the
    overflow fix then names the limit instead of asking for workers. Without
    it, only a downstream that answers 429 shows the cap."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"classifier setting {f.name!r} must be a finite number, got {value!r}")
        positive = ("window_s", "target_utilization", "min_window_intervals")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"classifier setting {name!r} must be positive, got {getattr(self, name)!r}")
        # Every setting that is a share of something lives in (0, 1]; the
        # others are a window, a count, or a ratio of rates (inflow).
        not_shares = {
            "window_s",
            "min_window_intervals",
            "overflow_inflow_on",
            "overflow_inflow_off",
            "rate_limited_min_calls",
            "min_workers",
            "boom_bust_idle_wait_on",
            "boom_bust_idle_wait_off",
            "boom_bust_long_wait_on",
            "boom_bust_long_wait_off",
            "boom_bust_sightings_on",
            "boom_bust_sightings_off",
            "downstream_limit",
        }
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in not_shares and not 0 < value <= 1:
                raise ValueError(f"classifier setting {f.name!r} must be in (0, 1], got {value!r}")
        pairs = [(f.name, f.name[: -len("_off")] + "_on") for f in fields(self) if f.name.endswith("_off")]
        for low, high in pairs:
            if getattr(self, low) > getattr(self, high):
                raise ValueError(
                    f"classifier setting {low!r} ({getattr(self, low)}) must not exceed "
                    f"{high!r} ({getattr(self, high)}): the off threshold is the lower one"
                )
        if self.min_workers < 0 or self.rate_limited_min_calls < 0 or self.downstream_limit < 0:
            raise ValueError(
                "classifier settings 'min_workers', 'rate_limited_min_calls' and 'downstream_limit' "
                "must not be negative"
            )

    def span_for(self, interval_s: float) -> float:
        """The window span used for a given sampling interval: ``window_s``, and
        at least ``min_window_intervals`` samples, in whole intervals (so that the
        window holds the same samples for the classifier and the PromQL rules)."""
        intervals = max(math.ceil(self.window_s / interval_s - 1e-9), self.min_window_intervals)
        return intervals * interval_s

    def with_overrides(self, overrides: dict[str, Any]) -> ClassifierConfig:
        """A copy with some settings replaced; an unknown key is a ValueError naming it."""
        known = {f.name: f for f in fields(self)}
        converted: dict[str, Any] = {}
        for key, given in overrides.items():
            value = given
            if key not in known:
                raise ValueError(f"unknown classifier setting {key!r} (known: {', '.join(sorted(known))})")
            if isinstance(value, str):
                try:
                    value = int(value) if known[key].type in ("int", int) else float(value)
                except ValueError:
                    raise ValueError(f"classifier setting {key!r} must be a number, got {given!r}") from None
            converted[key] = value
        return replace(self, **converted)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
