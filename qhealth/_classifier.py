"""Judging a pool's condition from its window.

What each condition means, and which measures decide it, is written once in
:mod:`qhealth._measures`; the PromQL rules are compiled from the same table.
This module evaluates that definition on a queue's window of samples
(:mod:`qhealth._evaluate`), keeps each condition on while its ``hold``
predicate holds (hysteresis), and explains every verdict: a reason with the
numbers behind it and a fix, plus what could not be judged and why.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ._condition import HEALTHY, SEVERITY, WARMING_UP, Condition, State, state_of
from ._config import ClassifierConfig
from ._evaluate import Evaluation, SeriesComputer
from ._language import Part, Requirement
from ._measures import RULE
from ._running import RunningWindow
from ._sample import Sample
from ._window import Window

__all__ = [
    "HEALTHY",
    "SEVERITY",
    "WARMING_UP",
    "Classifier",
    "Condition",
    "Finding",
    "Health",
    "State",
    "classify",
    "judge",
    "state_of",
]


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
    state: State
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
    target utilisation, capped by what the downstream rate limit allows, and
    never fewer than are busy right now."""
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


# -- words ---------------------------------------------------------------------------


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _pct(share: float) -> str:
    return f"{share * 100:.0f}%"


def _seconds(ev: Evaluation) -> float:
    return ev.latest.t - ev.primitives.oldest_t


def _stalled(ev: Evaluation) -> Finding:
    latest = ev.latest
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
    reason = f"{latest.depth:,} items waiting and none processed in {_fmt(_seconds(ev))} s ({why})"
    return Finding(Condition.STALLED, reason, hint)


#: Calls at this share of the configured ``downstream_limit`` or more: the limit is what caps processing.
LIMIT_REACHED = 0.9


def _calls_per_s(ev: Evaluation) -> float | None:
    attempts, seconds = ev.measure("attempts"), _seconds(ev)
    return attempts / seconds if attempts is not None and seconds > 0 else None


def _capacity_hint(ev: Evaluation, recommended: int | None, capped: bool) -> str:
    """What to do about a backlog: more workers only when workers are what is missing.

    Two signals say the downstream caps processing: it answers 429 (``capped``,
    the rate_limited condition), or the pool already calls at the limit the
    configuration states (``downstream_limit``), which a pool that paces its
    calls with a limiter reaches without a single 429."""
    if capped:
        accepted = _accepted_calls_per_s(ev)
        limit = f" at about {_fmt(accepted)} calls/s" if accepted is not None else ""
        return (
            f"the downstream API caps processing{limit} (it answers 429): more workers cannot help; "
            "raise the downstream limit or shed load"
        )
    stated, calls = ev.cfg.downstream_limit, _calls_per_s(ev)
    if stated > 0 and calls is not None and calls >= LIMIT_REACHED * stated:
        return (
            f"the downstream limit caps processing at {_fmt(stated)} calls/s (calls run at {_fmt(calls)}/s): "
            "more workers cannot help; raise the downstream limit or shed load"
        )
    if recommended is None:
        return "add workers or shed load"
    latest = ev.latest
    if latest.workers is not None and recommended > latest.workers:
        return f"add workers (about {recommended} needed, {latest.workers} running) or shed load"
    return "processing is capped downstream: raise the downstream limit or shed load"


def _overflow(ev: Evaluation, capacity: int | None, recommended: int | None, capped: bool) -> Finding:
    latest = ev.latest
    seconds = _fmt(_seconds(ev))
    hint = _capacity_hint(ev, recommended, capped)
    full = ev.measure("near_capacity_share")
    if capacity and full is not None and full >= ev.cfg.overflow_full_off:
        reason = (
            f"depth {latest.depth:,}/{capacity:,} ({_pct(latest.depth / capacity)} of capacity); "
            f"near capacity in {_pct(full)} of {seconds} s"
        )
        tput = ev.measure("throughput")
        if tput is not None:
            reason += f", processing {_fmt(tput)}/s"
        return Finding(Condition.OVERFLOW, reason, hint + "; producers are being blocked or items dropped")
    first = ev.primitives.oldest_depth
    reason = f"backlog grew {first:,} -> {latest.depth:,} in {seconds} s"
    if capacity:
        reason += f" (capacity {capacity:,})"
    arrival, tput = ev.per_second("enqueued"), ev.measure("throughput")
    if arrival is not None and tput is not None:
        reason += f": arriving {_fmt(arrival)}/s, processed {_fmt(tput)}/s"
    return Finding(Condition.OVERFLOW, reason, hint)


def _rate_limited(ev: Evaluation) -> Finding:
    ratio = ev.measure("rate_limited_ratio") or 0.0
    attempts = ev.measure("attempts") or 0.0
    reason = f"{_pct(ratio)} of {attempts:,.0f} downstream calls answered 429 in {_fmt(_seconds(ev))} s"
    hint = (
        "share one rate limiter across all workers (a token bucket; through Redis across processes) "
        "and honour Retry-After with jitter instead of retrying at once"
    )
    return Finding(Condition.RATE_LIMITED, reason, hint)


def _boom_bust(ev: Evaluation) -> Finding:
    details = []
    capacity_share, wait = ev.measure("idle_capacity_share"), ev.measure("idle_wait_s")
    if (
        capacity_share is not None
        and wait is not None
        and capacity_share >= ev.cfg.boom_bust_idle_capacity_off
    ):
        details.append(
            f"{_pct(capacity_share)} of the workers sat idle while items waited for them, "
            f"each item about {_fmt(wait)} s"
        )
    excess, seen = ev.measure("busy_excess"), ev.measure("waiting_idle_share")
    if excess is not None and excess >= ev.cfg.boom_bust_busy_excess_off:
        counted = ev.measure("idle_ratio")
        busy_over_time = f" against {_pct(1 - counted)} over time" if counted is not None else ""
        details.append(
            f"workers caught busy at every sample far more than on average ({_pct(excess)} more"
            f"{busy_over_time}): they work in step with a clock"
        )
        if seen is not None:
            details.append(f"items waited next to idle workers in {_pct(seen)} of samples")
    busy = ev.primitives.extent("busy")
    if busy is not None:
        details.append(f"busy {busy[0]:.0f}-{busy[1]:.0f} of {ev.latest.workers}")
    depth = ev.primitives.extent("depth")
    if depth is not None:
        details.append(f"depth {depth[0]:,.0f}-{depth[1]:,.0f}")
    reason = "; ".join(details) + f" over {_fmt(_seconds(ev))} s"
    hint = "workers poll on a fixed interval: block on the queue, or add jitter"
    return Finding(Condition.BOOM_BUST, reason, hint)


def _idle(ev: Evaluation, recommended: int | None) -> Finding:
    latest = ev.latest
    ratio = ev.measure("idle_ratio")
    shown = ratio if ratio is not None else ev.measure("idle_ratio", Part.RECENT) or 0.0
    tput = ev.measure("throughput")
    reason = f"queue empty and {_pct(shown)} of worker-time idle over {_fmt(_seconds(ev))} s"
    if latest.workers is not None:
        reason += f" ({latest.workers} workers"
        reason += f", {_fmt(tput)} items/s)" if tput is not None else ")"
    if recommended is not None and latest.workers is not None and recommended < latest.workers:
        hint = f"scale down to {recommended} worker{'s' if recommended != 1 else ''}"
    else:
        hint = "scale down (few workers would do), or send this pool more work"
    return Finding(Condition.IDLE, reason, hint)


# -- the recommendation ------------------------------------------------------------------


def _accepted_calls_per_s(ev: Evaluation) -> float | None:
    attempts, limited, seconds = ev.measure("attempts"), ev.increase("rate_limited"), _seconds(ev)
    if attempts is None or limited is None or seconds <= 0:
        return None
    return max(attempts - limited, 0.0) / seconds


def recommend_workers(ev: Evaluation, rate_limited: bool) -> int | None:
    """Workers needed: Little's law (arrival rate x time an item holds a worker)
    at the target utilisation, capped by the rate the downstream accepts when it
    answers 429, and never below the workers busy right now (scaling down must
    not stop running work)."""
    cfg = ev.cfg
    seconds = _seconds(ev)
    if seconds <= 0:
        return None
    arrival = ev.per_second("enqueued")
    tput = ev.measure("throughput")
    if arrival is None and tput is not None:
        # No arrival count (a sidecar): arrivals = processed + backlog growth.
        arrival = tput + (ev.latest.depth - ev.primitives.oldest_depth) / seconds
    if arrival is None:
        return None
    busy_now = ev.latest.busy or 0
    arrival = max(arrival, 0.0)
    if arrival == 0:
        return max(cfg.min_workers, busy_now)
    processed, idle_s, worker_seconds = (
        ev.measure("processed"),
        ev.increase("idle_s"),
        ev.measure("worker_seconds"),
    )
    if idle_s is None or worker_seconds is None or not processed:
        return None
    hold_s = max(worker_seconds - idle_s, 0.0) / processed  # seconds an item holds a worker, retries included
    demand = arrival
    attempts, limited = ev.measure("attempts"), ev.increase("rate_limited")
    if rate_limited and attempts and limited is not None and tput:
        accepted = (attempts - limited) / seconds
        calls_per_item = max((attempts - limited) / processed, 1e-9)
        demand = min(demand, accepted / calls_per_item)
    needed = math.ceil(demand * hold_s / cfg.target_utilization - 1e-9)
    return max(cfg.min_workers, needed, busy_now)


# -- the verdict -------------------------------------------------------------------------


def _unmet(requirement: Requirement, ev: Evaluation) -> bool:
    latest = ev.latest
    if any(getattr(latest, name) is None for name in requirement.fields):
        return True
    if requirement.any_field and all(getattr(latest, name) is None for name in requirement.any_field):
        return True
    return requirement.measure is not None and ev.measure(requirement.measure) is None


def _not_judged(condition: Condition, ev: Evaluation) -> str | None:
    for requirement in RULE[condition].requires:
        if _unmet(requirement, ev):
            return requirement.reason
    return None


def active_conditions(ev: Evaluation, previous: frozenset[Condition]) -> dict[Condition, bool | str]:
    """Each condition: active or not, or why it is not judged. On when its
    ``on`` predicate holds; kept on while its ``hold`` predicate holds."""
    out: dict[Condition, bool | str] = {}
    for condition in SEVERITY:
        why = _not_judged(condition, ev)
        if why is not None:
            out[condition] = why
            continue
        rule = RULE[condition]
        out[condition] = ev.holds(rule.on) or (condition in previous and ev.holds(rule.hold))
    return out


def judge(
    window: Window | RunningWindow,
    previous: frozenset[Condition] = frozenset(),
    config: ClassifierConfig | None = None,
    capacity: int | None = None,
    *,
    interval_s: float | None = None,
) -> Health:
    """The verdict on the window ending at its newest sample.

    ``previous`` are the conditions active at the previous verdict (an active
    condition is held while its ``hold`` predicate holds). ``capacity`` is the
    queue's maximum size, if bounded; ``interval_s`` the nominal sampling
    interval (default: the window's median interval).
    """
    cfg = config or ClassifierConfig()
    latest = window.latest
    if latest is None:
        raise ValueError("cannot judge an empty window")
    interval = interval_s if interval_s is not None else _median_interval(window.samples)
    # Judge only once the window reaches back (almost) its whole span.
    if interval is None or window.covered_s < window.span_s - 0.5 * interval:
        return Health(t=latest.t, state=WARMING_UP)
    if isinstance(window, RunningWindow):
        ev = Evaluation(window, cfg)
    else:
        rows = window.rows
        if not rows or len(rows[0].values) == 0:
            rows = [SeriesComputer(cfg, capacity).row(s) for s in window.samples]
        recent = cfg.clear_fraction * window.span_s
        ev = Evaluation.of_rows(rows, cfg, interval_s=interval, span_s=window.span_s, recent_s=recent)
    return _verdict(ev, previous, capacity)


def _verdict(ev: Evaluation, previous: frozenset[Condition], capacity: int | None) -> Health:
    verdicts = active_conditions(ev, previous)
    conditions = frozenset(c for c, v in verdicts.items() if v is True)
    rate_limited = Condition.RATE_LIMITED in conditions
    recommended = recommend_workers(ev, rate_limited)
    findings: list[Finding] = []
    for condition in SEVERITY:
        if condition not in conditions:
            continue
        if condition is Condition.STALLED:
            findings.append(_stalled(ev))
        elif condition is Condition.OVERFLOW:
            findings.append(_overflow(ev, capacity, recommended, rate_limited))
        elif condition is Condition.RATE_LIMITED:
            findings.append(_rate_limited(ev))
        elif condition is Condition.BOOM_BUST:
            findings.append(_boom_bust(ev))
        else:
            findings.append(_idle(ev, recommended))
    return Health(
        t=ev.latest.t,
        state=state_of(conditions),
        conditions=conditions,
        findings=tuple(findings),
        not_judged={c: v for c, v in verdicts.items() if isinstance(v, str)},
        idle_ratio=ev.measure("idle_ratio"),
        rate_limited_ratio=ev.measure("rate_limited_ratio"),
        workers_recommended=recommended,
        arrival_rate=ev.per_second("enqueued"),
        throughput=ev.measure("throughput"),
    )


def _median_interval(samples: Sequence[Sample]) -> float | None:
    gaps = sorted(b.t - a.t for a, b in itertools.pairwise(samples))
    return gaps[len(gaps) // 2] if gaps else None


class Classifier:
    """Classifies a stream of samples of one queue, one verdict per sample."""

    def __init__(
        self, interval_s: float, config: ClassifierConfig | None = None, capacity: int | None = None
    ) -> None:
        if not interval_s > 0 or not math.isfinite(interval_s):
            raise ValueError(f"interval_s must be a positive number, got {interval_s!r}")
        self.config = config or ClassifierConfig()
        self.capacity = capacity
        self.interval_s = interval_s
        span = self.config.span_for(interval_s)
        self._computer = SeriesComputer(self.config, capacity)
        # Room for the span at the nominal interval, plus slack for jittery ticks.
        self.window = RunningWindow(
            span,
            max_samples=math.ceil(span / interval_s) * 2 + 2,
            series=self._computer,
            interval_s=interval_s,
            recent_s=self.config.clear_fraction * span,
        )
        self._previous: frozenset[Condition] = frozenset()

    def update(self, sample: Sample) -> Health:
        self.window.append(sample)
        health = judge(self.window, self._previous, self.config, self.capacity, interval_s=self.interval_s)
        self._previous = health.conditions
        return health

    def reset(self) -> None:
        """Forget the window and the active conditions (the queue was re-created)."""
        self.window.clear()
        self._previous = frozenset()


def classify(
    samples: Iterable[Sample],
    interval_s: float,
    config: ClassifierConfig | None = None,
    capacity: int | None = None,
) -> list[Health]:
    """One verdict per sample of a whole trace."""
    classifier = Classifier(interval_s, config, capacity)
    return [classifier.update(s) for s in samples]
