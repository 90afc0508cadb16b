"""Judging a pool's condition from its window.

:func:`judge` is a pure function: window in, :class:`Health` out, given the
conditions active at the previous tick (for hysteresis). :class:`Classifier`
holds that one piece of state for a stream of samples.

Each condition has one detector. A detector measures something over the
window's samples and counter increases and compares it with thresholds that are
relative to the pool (its capacity, worker count and own throughput); it never
compares with an absolute depth or rate. A detector that needs a field the
source does not know says so instead of guessing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from ._config import ClassifierConfig
from ._sample import Sample
from ._window import Interval, Window


class Condition(StrEnum):
    """The conditions of ``shared/spec/trace-format.md``."""

    STALLED = "stalled"
    OVERFLOW = "overflow"
    RATE_LIMITED = "rate_limited"
    BOOM_BUST = "boom_bust"
    IDLE = "idle"


#: Most severe first: the order that picks a verdict's ``state``.
SEVERITY: tuple[Condition, ...] = (
    Condition.STALLED,
    Condition.OVERFLOW,
    Condition.RATE_LIMITED,
    Condition.BOOM_BUST,
    Condition.IDLE,
)

HEALTHY = "healthy"
WARMING_UP = "warming_up"


@dataclass(frozen=True, slots=True)
class Finding:
    """Why a condition is active, with the numbers, and what to do about it."""

    condition: Condition
    reason: str
    hint: str


@dataclass(frozen=True, slots=True)
class Health:
    """The verdict on one queue at one tick."""

    t: float
    state: str
    """``healthy``, ``warming_up``, or the most severe active condition."""
    conditions: frozenset[Condition] = frozenset()
    findings: tuple[Finding, ...] = ()
    """One per active condition, most severe first."""
    not_judged: dict[Condition, str] = field(default_factory=dict)
    """Conditions that could not be judged, and why (a field the source does not know)."""
    idle_ratio: float | None = None
    """Idle worker-time / worker-time over the window."""
    rate_limited_ratio: float | None = None
    """Calls answered 429 / calls over the window."""
    workers_recommended: int | None = None
    """Workers needed for the observed arrival rate and processing time at the
    target utilisation, capped by what the downstream rate limit allows."""
    arrival_rate: float | None = None
    """Items enqueued per second over the window."""
    throughput: float | None = None
    """Items processed per second over the window."""

    @property
    def ordered_conditions(self) -> list[Condition]:
        return [c for c in SEVERITY if c in self.conditions]

    def to_json(self) -> dict[str, object]:
        """The spec's per-sample output object."""
        return {"t": self.t, "state": self.state, "conditions": [str(c) for c in self.ordered_conditions]}


def state_of(conditions: Iterable[Condition]) -> str:
    active = set(conditions)
    for condition in SEVERITY:
        if condition in active:
            return str(condition)
    return HEALTHY


# -- measures over a stretch of the window ------------------------------------


def _sum(values: Iterable[float | None]) -> float | None:
    total = 0.0
    for value in values:
        if value is None:
            return None
        total += value
    return total


def _share(samples: Sequence[Sample], predicate: Callable[[Sample], bool]) -> float:
    return sum(1 for s in samples if predicate(s)) / len(samples) if samples else 0.0


@dataclass(frozen=True, slots=True)
class _Stretch:
    """Totals over consecutive intervals (the whole window, or its recent part)."""

    samples: Sequence[Sample]
    intervals: Sequence[Interval]
    seconds: float
    enqueued: float | None
    processed: float | None
    attempts: float | None
    rate_limited: float | None
    idle_s: float | None
    worker_seconds: float | None

    @classmethod
    def of(cls, intervals: Sequence[Interval]) -> _Stretch:
        samples = [intervals[0].start, *(iv.end for iv in intervals)] if intervals else []
        return cls(
            samples=samples,
            intervals=intervals,
            seconds=sum(iv.dt for iv in intervals),
            enqueued=_sum(iv.enqueued for iv in intervals),
            processed=_sum(iv.processed for iv in intervals),
            attempts=_sum(iv.attempts for iv in intervals),
            rate_limited=_sum(iv.rate_limited for iv in intervals),
            idle_s=_sum(iv.idle_s for iv in intervals),
            worker_seconds=_sum(iv.worker_seconds for iv in intervals),
        )

    @property
    def idle_ratio(self) -> float | None:
        if self.idle_s is None or not self.worker_seconds:
            return None
        return min(1.0, self.idle_s / self.worker_seconds)

    @property
    def rate_limited_ratio(self) -> float | None:
        if self.rate_limited is None or not self.attempts:
            return None
        return min(1.0, self.rate_limited / self.attempts)

    def rate(self, count: float | None) -> float | None:
        return None if count is None or self.seconds <= 0 else count / self.seconds

    @property
    def knows_busy(self) -> bool:
        return all(s.busy is not None and s.workers is not None for s in self.samples)

    @property
    def waiting_idle_share(self) -> float | None:
        """Idle worker-time that passed while items waited, as a share of worker-time.

        Counted over intervals with a backlog at both ends: a blocking worker
        is never idle while an item waits, so in a healthy pool this stays near
        zero even at coarse sampling, while workers that sleep between polls
        pile it up whatever the sampling phase.
        """
        if not self.worker_seconds:
            return None
        waiting_idle = 0.0
        for iv in self.intervals:
            if iv.idle_s is None:
                return None
            if iv.start.depth > 0 and iv.end.depth > 0:
                waiting_idle += iv.idle_s
        return waiting_idle / self.worker_seconds

    @property
    def backlog_idle_share(self) -> float | None:
        """Share of samples where workers sat idle next to a backlog big enough
        to occupy every one of them.

        The synchronisation signature: workers that poll in step all sleep
        while the backlog builds, so a sample catches idle workers *and* enough
        waiting items for all of them. Jittered or blocking workers leave few
        items waiting per idle worker. Unknown when busy workers are unknown.
        """
        if not self.samples or not self.knows_busy:
            return None
        hits = 0
        for s in self.samples:
            idle = (s.workers or 0) - (s.busy or 0)
            if idle >= 1 and s.depth >= idle:
                hits += 1
        return hits / len(self.samples)


def _recent(intervals: Sequence[Interval], seconds: float) -> Sequence[Interval]:
    if not intervals:
        return intervals
    horizon = intervals[-1].end.t - seconds
    recent = [iv for iv in intervals if iv.end.t > horizon + 1e-9]
    return recent or list(intervals[-1:])


# -- detectors ---------------------------------------------------------------------

# A detector gets the whole window, the recent part, whether its condition was
# active, and the settings. It returns the finding when the condition is active,
# None when it is not, or a string saying why it cannot judge.
_Verdict = Finding | str | None


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _pct(share: float) -> str:
    return f"{share * 100:.0f}%"


def _detect_stalled(whole: _Stretch, recent: _Stretch, active: bool, cfg: ClassifierConfig) -> _Verdict:
    if whole.processed is None:
        return "items processed are unknown (processed_total is null)"
    waiting_share = _share(whole.samples, lambda s: s.depth > 0)
    latest = whole.samples[-1]
    if whole.processed > 0 or latest.depth == 0 or waiting_share < cfg.stalled_waiting_share:
        return None
    workers, busy = latest.workers, latest.busy
    if workers == 0:
        why, hint = (
            "no workers are running",
            "workers died or were scaled to zero: start workers for this queue",
        )
    elif busy is not None and workers is not None and busy >= workers:
        why = f"all {workers} workers hold an item and none finished"
        hint = "a downstream call hangs: put a timeout on every call, then restart the stuck workers"
    elif busy is not None and workers is not None:
        why = f"{workers - busy} of {workers} workers idle"
        hint = (
            "workers are up but take nothing: check their broker connection (reconnect with backoff) "
            "and restart them"
        )
    else:
        why, hint = "workers unknown", "check that the workers are running and connected to the broker"
    reason = f"{latest.depth:,} items waiting and none processed in {_fmt(whole.seconds)} s ({why})"
    return Finding(Condition.STALLED, reason, hint)


def _needed_workers_text(whole: _Stretch, recommended: int | None) -> str:
    if recommended is None:
        return "add workers or shed load"
    latest = whole.samples[-1]
    if latest.workers is not None and recommended > latest.workers:
        return f"add workers (about {recommended} needed, {latest.workers} running) or shed load"
    return "processing is capped downstream: raise the downstream limit or shed load"


def _thirds(samples: Sequence[Sample]) -> tuple[Sequence[Sample], Sequence[Sample]]:
    k = max(1, len(samples) // 3)
    return samples[:k], samples[-k:]


def _detect_overflow(
    whole: _Stretch,
    recent: _Stretch,
    active: bool,
    cfg: ClassifierConfig,
    capacity: int | None,
    recommended: int | None,
) -> _Verdict:
    latest = whole.samples[-1]
    near = cfg.overflow_near_capacity * capacity if capacity else math.inf
    # Bounded queue: the backlog sits near capacity.
    if capacity:
        full_share = _share(whole.samples, lambda s: s.depth >= near)
        recent_share = _share(recent.samples, lambda s: s.depth >= near)
        if _holds(active, full_share, recent_share, cfg.overflow_full_on, cfg.overflow_full_off):
            reason = (
                f"depth {latest.depth:,}/{capacity:,} ({_pct(latest.depth / capacity)} of capacity); "
                f"near capacity in {_pct(full_share)} of {_fmt(whole.seconds)} s"
            )
            tput = whole.rate(whole.processed)
            if tput is not None:
                reason += f", processing {_fmt(tput)}/s"
            return Finding(
                Condition.OVERFLOW,
                reason,
                _needed_workers_text(whole, recommended) + "; producers are being blocked or items dropped",
            )
    # Any queue: a backlog that keeps growing because arrivals outpace processing.
    stretch = recent if active else whole
    if _share(stretch.samples, lambda s: s.depth > 0) < cfg.overflow_backlog_share:
        return None
    inflow_needed = cfg.overflow_inflow_off if active else cfg.overflow_inflow_on
    if (
        stretch.enqueued is not None
        and stretch.processed is not None
        and (stretch.enqueued < inflow_needed * stretch.processed or stretch.enqueued == 0)
    ):
        return None
    if active:
        # Held while the backlog is not shrinking.
        if stretch.samples[-1].depth < stretch.samples[0].depth:
            return None
    else:
        # A trend, not noise: every depth in the last third of the window is
        # above every depth in the first third (or has reached capacity), and
        # the rise is a real share of the work done meanwhile.
        first, last = _thirds(whole.samples)
        low_end, high_start = min(s.depth for s in last), max(s.depth for s in first)
        if not (low_end > high_start or low_end >= near):
            return None
        rise = low_end - high_start
        if whole.processed and low_end < near and rise < cfg.overflow_growth_on * whole.processed:
            return None
    first_depth = whole.samples[0].depth
    arrival, tput = whole.rate(whole.enqueued), whole.rate(whole.processed)
    reason = f"backlog grew {first_depth:,} -> {latest.depth:,} in {_fmt(whole.seconds)} s"
    if capacity:
        reason += f" (capacity {capacity:,})"
    if arrival is not None and tput is not None:
        reason += f": arriving {_fmt(arrival)}/s, processed {_fmt(tput)}/s"
    return Finding(Condition.OVERFLOW, reason, _needed_workers_text(whole, recommended))


def _holds(active: bool, whole: float | None, recent: float | None, on: float, off: float) -> bool:
    """The hysteresis rule every detector follows.

    Off -> on: the whole window reaches ``on`` and the recent part still shows
    at least ``off`` (so evidence that has already ended cannot switch a
    condition back on). On -> off: the recent part falls below ``off``.
    """
    if recent is None or recent < off:
        return False
    return active or (whole is not None and whole >= on)


def _detect_rate_limited(whole: _Stretch, recent: _Stretch, active: bool, cfg: ClassifierConfig) -> _Verdict:
    if whole.attempts is None or whole.rate_limited is None:
        return "downstream calls or 429s are unknown (attempts_total or rate_limited_total is null)"
    if (whole.attempts or 0) < cfg.rate_limited_min_calls:
        return None
    if not _holds(
        active, whole.rate_limited_ratio, recent.rate_limited_ratio, cfg.rate_limited_on, cfg.rate_limited_off
    ):
        return None
    whole_ratio = whole.rate_limited_ratio or 0.0
    reason = (
        f"{_pct(whole_ratio)} of {whole.attempts:,.0f} downstream calls answered 429 "
        f"in {_fmt(whole.seconds)} s"
    )
    hint = (
        "share one rate limiter across all workers (a token bucket; through Redis across processes) "
        "and honour Retry-After with jitter instead of retrying at once"
    )
    return Finding(Condition.RATE_LIMITED, reason, hint)


def _detect_boom_bust(whole: _Stretch, recent: _Stretch, active: bool, cfg: ClassifierConfig) -> _Verdict:
    if whole.processed is not None and whole.processed <= 0:
        return None  # nothing is being processed: not an oscillation (stalled or idle judge it)
    backlog_share = whole.backlog_idle_share
    waiting_idle = whole.waiting_idle_share
    if backlog_share is None and waiting_idle is None:
        return "busy workers and idle time are unknown (busy and idle_s_total are null)"
    details = []
    # Idle workers next to a backlog that could occupy them all, seen in samples.
    if backlog_share is not None:
        if not _holds(
            active,
            backlog_share,
            recent.backlog_idle_share,
            cfg.boom_bust_backlog_on,
            cfg.boom_bust_backlog_off,
        ):
            return None
        details.append(f"a backlog waited next to idle workers in {_pct(backlog_share)} of samples")
    # Idle time accrued while items waited, from the counters: true whatever the sampling phase.
    if waiting_idle is not None:
        if not _holds(active, waiting_idle, recent.waiting_idle_share, cfg.boom_bust_on, cfg.boom_bust_off):
            return None
        details.append(f"workers sat idle while items waited for {_pct(waiting_idle)} of worker-time")
    latest = whole.samples[-1]
    if whole.knows_busy:
        busy = [s.busy or 0 for s in whole.samples]
        details.append(f"busy {min(busy)}-{max(busy)} of {latest.workers}")
    depths = [s.depth for s in whole.samples]
    details.append(f"depth {min(depths):,}-{max(depths):,}")
    reason = "; ".join(details) + f" over {_fmt(whole.seconds)} s"
    hint = "workers poll on a fixed interval: block on the queue, or add jitter"
    return Finding(Condition.BOOM_BUST, reason, hint)


def _no_backlog(s: Sample) -> bool:
    """An empty queue, or fewer items than idle workers: what an idle pool
    shows (an item caught between its arrival and its pickup is no backlog)."""
    if s.depth == 0:
        return True
    if s.workers is None or s.busy is None:
        return False
    return s.depth < s.workers - s.busy


def _idle_measure(stretch: _Stretch, cfg: ClassifierConfig) -> float | str | None:
    """Idle share of worker-time over a stretch whose queue stayed empty;
    None when the queue did not stay empty, a string when it cannot tell."""
    if _share(stretch.samples, _no_backlog) < cfg.idle_empty_share:
        return None
    ratio = stretch.idle_ratio
    if ratio is not None:
        return ratio
    if not stretch.knows_busy:
        return "idle time and busy workers are unknown (idle_s_total and busy are null)"
    # Busy counts seen only at sample times can miss work done between them
    # (a spike drained between two samples): judge only when nothing was done.
    if stretch.processed is None or stretch.processed > 0:
        return (
            "idle time is unknown (idle_s_total is null) and items were processed: "
            "sampled busy counts alone cannot tell"
        )
    total_workers = sum(s.workers or 0 for s in stretch.samples)
    if total_workers == 0:
        return None
    return 1.0 - sum(s.busy or 0 for s in stretch.samples) / total_workers


def _detect_idle(
    whole: _Stretch, recent: _Stretch, active: bool, cfg: ClassifierConfig, recommended: int | None
) -> _Verdict:
    whole_ratio, recent_ratio = _idle_measure(whole, cfg), _idle_measure(recent, cfg)
    if isinstance(whole_ratio, str):
        return whole_ratio
    if isinstance(recent_ratio, str) or not _holds(
        active, whole_ratio, recent_ratio, cfg.idle_on, cfg.idle_off
    ):
        return None
    latest = whole.samples[-1]
    shown = whole_ratio if whole_ratio is not None else recent_ratio or 0.0
    tput = whole.rate(whole.processed)
    reason = f"queue empty and {_pct(shown)} of worker-time idle over {_fmt(whole.seconds)} s"
    if latest.workers is not None:
        reason += f" ({latest.workers} workers"
        reason += f", {_fmt(tput)} items/s)" if tput is not None else ")"
    if recommended is not None and latest.workers is not None and recommended < latest.workers:
        hint = f"scale down to {recommended} worker{'s' if recommended != 1 else ''}"
    else:
        hint = "scale down (few workers would do), or send this pool more work"
    return Finding(Condition.IDLE, reason, hint)


# -- the recommendation -----------------------------------------------------------


def recommend_workers(whole: _Stretch, cfg: ClassifierConfig, rate_limited: bool) -> int | None:
    """Workers needed: Little's law (arrival rate x time an item holds a worker)
    at the target utilisation, capped by the rate the downstream accepts when it
    is answering 429."""
    arrival = whole.rate(whole.enqueued)
    tput = whole.rate(whole.processed)
    if arrival is None and tput is not None:
        # No arrival count (a sidecar): arrivals = processed + backlog growth.
        arrival = tput + (whole.samples[-1].depth - whole.samples[0].depth) / whole.seconds
    if arrival is None:
        return None
    arrival = max(arrival, 0.0)
    if arrival == 0:
        return cfg.min_workers
    if whole.idle_s is None or whole.worker_seconds is None or not whole.processed:
        return None
    busy_seconds = max(whole.worker_seconds - whole.idle_s, 0.0)
    hold_s = busy_seconds / whole.processed  # seconds an item holds a worker, retries included
    demand = arrival
    if rate_limited and whole.attempts and whole.rate_limited is not None and tput:
        # Calls the downstream accepts per second, turned into items per second.
        accepted_calls = (whole.attempts - whole.rate_limited) / whole.seconds
        calls_per_item = max((whole.attempts - whole.rate_limited) / whole.processed, 1e-9)
        demand = min(demand, accepted_calls / calls_per_item)
    return max(cfg.min_workers, math.ceil(demand * hold_s / cfg.target_utilization - 1e-9))


# -- the verdict ------------------------------------------------------------------


def judge(
    window: Window,
    previous: frozenset[Condition] = frozenset(),
    config: ClassifierConfig | None = None,
    capacity: int | None = None,
) -> Health:
    """The verdict on the window ending at its newest sample.

    ``previous`` are the conditions active at the previous tick: an active
    condition is held until the recent part of the window falls below its lower
    threshold (hysteresis). ``capacity`` is the queue's maximum size, if bounded.
    """
    cfg = config or ClassifierConfig()
    latest = window.latest
    if latest is None:
        raise ValueError("cannot judge an empty window")
    intervals = list(window.intervals)
    # Judge only once the window reaches back (almost) its whole span.
    if not intervals or window.covered_s < window.span_s - 0.5 * intervals[-1].dt:
        return Health(t=latest.t, state=WARMING_UP)
    whole = _Stretch.of(intervals)
    recent = _Stretch.of(_recent(intervals, cfg.clear_fraction * window.span_s))

    rate_verdict = _detect_rate_limited(whole, recent, Condition.RATE_LIMITED in previous, cfg)
    recommended = recommend_workers(whole, cfg, isinstance(rate_verdict, Finding))
    verdicts: dict[Condition, _Verdict] = {
        Condition.STALLED: _detect_stalled(whole, recent, Condition.STALLED in previous, cfg),
        Condition.OVERFLOW: _detect_overflow(
            whole, recent, Condition.OVERFLOW in previous, cfg, capacity, recommended
        ),
        Condition.RATE_LIMITED: rate_verdict,
        Condition.BOOM_BUST: _detect_boom_bust(whole, recent, Condition.BOOM_BUST in previous, cfg),
        Condition.IDLE: _detect_idle(whole, recent, Condition.IDLE in previous, cfg, recommended),
    }
    findings = tuple(v for c in SEVERITY if isinstance(v := verdicts[c], Finding))
    not_judged = {c: v for c, v in verdicts.items() if isinstance(v, str)}
    conditions = frozenset(f.condition for f in findings)
    return Health(
        t=latest.t,
        state=state_of(conditions),
        conditions=conditions,
        findings=findings,
        not_judged=not_judged,
        idle_ratio=whole.idle_ratio,
        rate_limited_ratio=whole.rate_limited_ratio,
        workers_recommended=recommended,
        arrival_rate=whole.rate(whole.enqueued),
        throughput=whole.rate(whole.processed),
    )


def hold_for_dwell(
    health: Health,
    previous: Health | None,
    changed_at: dict[Condition, float],
    dwell_s: float,
) -> Health:
    """Keep each condition in its previous state until it has been there
    ``dwell_s`` seconds: a measure that hovers at a threshold cannot make a
    condition flicker on and off from tick to tick. ``changed_at`` records when
    each condition last changed, and is updated."""
    if previous is None or health.state == WARMING_UP:
        return health
    conditions = set(health.conditions)
    kept = {f.condition: f for f in previous.findings}
    for condition in SEVERITY:
        was, now = condition in previous.conditions, condition in health.conditions
        if was == now:
            continue
        if health.t - changed_at.get(condition, -math.inf) < dwell_s:
            if was:
                conditions.add(condition)
            else:
                conditions.discard(condition)
        else:
            changed_at[condition] = health.t
    if conditions == set(health.conditions):
        return health
    findings = {f.condition: f for f in health.findings}
    findings.update({c: kept[c] for c in conditions if c not in findings})
    return replace(
        health,
        state=state_of(conditions),
        conditions=frozenset(conditions),
        findings=tuple(findings[c] for c in SEVERITY if c in conditions),
    )


class Classifier:
    """Classifies a stream of samples of one queue, one verdict per sample."""

    def __init__(
        self, interval_s: float, config: ClassifierConfig | None = None, capacity: int | None = None
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s!r}")
        self.config = config or ClassifierConfig()
        self.capacity = capacity
        span = self.config.span_for(interval_s)
        # Room for the span at the nominal interval, plus slack for jittery ticks.
        self.window = Window(span, max_samples=math.ceil(span / interval_s) * 2 + 2)
        self._dwell_s = self.config.dwell_fraction * span
        self._previous: Health | None = None
        self._changed_at: dict[Condition, float] = {}

    def update(self, sample: Sample) -> Health:
        self.window.append(sample)
        active = self._previous.conditions if self._previous is not None else frozenset()
        health = judge(self.window, active, self.config, self.capacity)
        health = hold_for_dwell(health, self._previous, self._changed_at, self._dwell_s)
        self._previous = health
        return health

    def reset(self) -> None:
        """Forget the window and the active conditions (the queue was re-created)."""
        self.window.clear()
        self._previous = None
        self._changed_at.clear()


def classify(
    samples: Iterable[Sample],
    interval_s: float,
    config: ClassifierConfig | None = None,
    capacity: int | None = None,
) -> list[Health]:
    """One verdict per sample of a whole trace."""
    classifier = Classifier(interval_s, config, capacity)
    return [classifier.update(s) for s in samples]
