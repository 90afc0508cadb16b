"""The one definition of what qhealth measures and when each condition holds.

Two back ends read this module and nothing else decides a verdict:

* the in-process classifier (:mod:`qhealth._classifier`) evaluates it on a
  queue's sliding window of samples;
* the rules generator (:mod:`qhealth.rules`) compiles it into Prometheus
  recording rules and alerts, which judge the same queue from the exported
  series, summed over every process that feeds it.

Everything here is data. A *sample series* is computed from one sample
(``depth >= 1``, ``min(depth, idle workers)``); a *window measure* aggregates
sample series or counters over the window, or over its recent part; a
*condition* says which measures turn it on, which keep it on, and which sample
fields it cannot be judged without. Thresholds are named settings of
:class:`~qhealth.ClassifierConfig`, so changing one is one edit, and a test
evaluates every measure in both back ends on the same traces.

The window, as both back ends take it, for a sampling (scrape) interval ``I``
and a span ``S`` (``ClassifierConfig.span_for(I)``), ending at a sample at
time ``t``:

* sample measures use the samples in ``(t - S + I/2, t]``: the last ``S/I``
  samples (PromQL: ``avg_over_time(series[S - I/2])``);
* counter measures use the increase over ``[t - S, t]``, reset-aware
  (PromQL: ``increase(counter[S])``);
* the recent part is the same with ``clear_fraction * S`` in place of ``S``.
"""

from __future__ import annotations

from ._condition import Condition
from ._language import (
    Agg,
    Both,
    ConditionRule,
    Const,
    Diff,
    Earliest,
    Either,
    Field,
    FirstKnown,
    Gated,
    Increase,
    Is,
    Latest,
    Lesser,
    LowQuartile,
    M,
    MaxOfFirst,
    Mean,
    Measure,
    MinOfLast,
    Minus,
    Number,
    Otherwise,
    Over,
    Part,
    Pred,
    Product,
    Ratio,
    Requirement,
    Seconds,
    Series,
    Setting,
    Share,
    Times,
    Total,
    Unknown,
    Unless,
    above,
    all_of,
    any_of,
    at_least,
    below,
    equals,
)

DEPTH = Series("queue_depth", "Items waiting.", Field("depth"))
WORKERS = Series("workers", "Workers that exist.", Field("workers"))
BUSY = Series("workers_busy", "Workers holding an item.", Field("busy"))
_IDLE_WORKERS = Minus(Field("workers"), Field("busy"))

CAPACITY = Series("queue_capacity", "The queue's maximum size (absent when unbounded).", Field("capacity"))
WAITING = Series("waiting", "1 when items wait.", Is(Field("depth"), ">=", Const(1)))
NEAR_CAPACITY = Series(
    "near_capacity",
    "1 when the depth is at least overflow_near_capacity of the capacity (bounded queues only).",
    Is(Field("depth"), ">=", Times(Setting("overflow_near_capacity"), Field("capacity"))),
)
NO_BACKLOG = Series(
    "no_backlog",
    "1 when the queue is empty, or holds fewer items than idle workers (an item caught between its "
    "arrival and its pickup is no backlog); where busy workers are unknown, 1 when the queue is empty.",
    Otherwise(
        Either(Is(Field("depth"), "==", Const(0)), Is(Field("depth"), "<", _IDLE_WORKERS)),
        Is(Field("depth"), "==", Const(0)),
    ),
)
IDLE_NEXT_TO_WORK = Series(
    "idle_next_to_work",
    "Workers that sat idle while items waited for them: min(depth, idle workers). A worker that "
    "blocks on the queue is never idle while an item waits, so a healthy pool shows 0.",
    Lesser(Field("depth"), _IDLE_WORKERS),
)
QUEUED_WHILE_IDLE = Series(
    "queued_while_idle",
    "Items waiting while at least one worker sat idle (0 when every worker is busy).",
    Times(Field("depth"), Is(_IDLE_WORKERS, ">=", Const(1))),
)
BUSY_SHARE = Series(
    "busy_share",
    "Share of the workers busy at the sample (unknown without workers).",
    Over(Field("busy"), Field("workers")),
)
WAITING_NEXT_TO_IDLE = Series(
    "waiting_next_to_idle",
    "1 when items wait and at least one worker is idle.",
    Both(Is(Field("depth"), ">=", Const(1)), Is(_IDLE_WORKERS, ">=", Const(1))),
)

#: Every sample series, in the order the rules record them.
SERIES: tuple[Series, ...] = (
    DEPTH,
    CAPACITY,
    WORKERS,
    BUSY,
    WAITING,
    NEAR_CAPACITY,
    NO_BACKLOG,
    IDLE_NEXT_TO_WORK,
    QUEUED_WHILE_IDLE,
    WAITING_NEXT_TO_IDLE,
    BUSY_SHARE,
)


def _worker_seconds(part: Part) -> Agg:
    return Product(Mean(WORKERS, part), Seconds(part))


def _counted_idle_ratio(part: Part) -> Agg:
    return Share(Ratio(Increase("idle_s", part), _worker_seconds(part)))


def _sampled_busy_ratio(part: Part) -> Agg:
    return Share(Ratio(Total(BUSY, part), Total(WORKERS, part)))


def _arrivals(part: Part) -> Agg:
    """Items arriving per second; the items processed where arrivals are not
    counted (a worker-side adapter never sees producers)."""
    return FirstKnown(Ratio(Increase("enqueued", part), Seconds(part)), M("throughput", part))


MEASURES: tuple[Measure, ...] = (
    Measure(
        "processed",
        "Items whose processing ended in the window.",
        lambda p: Increase("processed", p),
        recent=True,
        unit="items",
    ),
    Measure(
        "enqueued",
        "Items put on the queue in the window.",
        lambda p: Increase("enqueued", p),
        recent=True,
        unit="items",
    ),
    Measure(
        "attempts",
        "Downstream calls in the window.",
        lambda p: Increase("attempts", p),
        recent=True,
        unit="calls",
    ),
    Measure(
        "throughput",
        "Items processed per second.",
        lambda p: Ratio(Increase("processed", p), Seconds(p)),
        recent=True,
        unit="per_second",
    ),
    Measure(
        "arrival_rate",
        "Items arriving per second (items processed per second where arrivals are unknown).",
        _arrivals,
        unit="per_second",
    ),
    Measure(
        "worker_seconds",
        "Worker-time available in the window.",
        _worker_seconds,
        unit="worker_seconds",
    ),
    Measure(
        "waiting_share",
        "Share of samples with items waiting.",
        lambda p: Mean(WAITING, p),
        recent=True,
    ),
    Measure(
        "near_capacity_share",
        "Share of samples with the depth near capacity (bounded queues).",
        lambda p: Mean(NEAR_CAPACITY, p),
        recent=True,
    ),
    Measure(
        "no_backlog_share",
        "Share of samples with no backlog (empty, or fewer items than idle workers).",
        lambda p: Mean(NO_BACKLOG, p),
        recent=True,
    ),
    Measure(
        "idle_ratio",
        "Idle worker-time / worker-time. Where idle time is not counted, and only when nothing was "
        "processed, the idle share of the sampled workers (busy counts seen only at sampling instants "
        "can miss work done between them).",
        lambda p: FirstKnown(
            _counted_idle_ratio(p),
            Gated(Diff(Number(1.0), _sampled_busy_ratio(p)), equals(Increase("processed", p), 0)),
        ),
        recent=True,
    ),
    Measure(
        "rate_limited_ratio",
        "Downstream calls answered 429 / downstream calls.",
        lambda p: Share(Ratio(Increase("rate_limited", p), Increase("attempts", p))),
        recent=True,
    ),
    Measure(
        "idle_capacity_share",
        "Boom-bust, how much: the share of the pool's workers that sat idle while items waited for "
        "them, averaged over the samples (sum of min(depth, idle workers) / sum of workers). A worker "
        "that blocks on the queue takes an item the moment it is free, so a healthy pool shows about "
        "0 whatever its traffic; workers that sleep between polls leave the pile-up of every cycle "
        "next to idle workers, at whatever phase of the cycle the samples land. Relative to the pool, "
        "so the same threshold holds for 3 and for 50 workers.",
        lambda p: Share(Ratio(Total(IDLE_NEXT_TO_WORK, p), Total(WORKERS, p))),
        recent=True,
    ),
    Measure(
        "idle_wait_s",
        "Boom-bust, how long: seconds an item spends waiting while a worker sits idle, by Little's law "
        "(mean items waiting next to an idle worker / items arriving per second). A consumer backing "
        "off for a moment, or many pollers out of step, leave items a fraction of a second; workers "
        "that sleep in step leave the pile-up of each cycle waiting for seconds.",
        lambda p: Ratio(Mean(QUEUED_WHILE_IDLE, p), _arrivals(p)),
        recent=True,
        unit="seconds",
    ),
    Measure(
        "waiting_idle_share",
        "Boom-bust, how often: share of samples with items waiting next to an idle worker.",
        lambda p: Mean(WAITING_NEXT_TO_IDLE, p),
        recent=True,
    ),
    Measure(
        "waiting_idle_samples",
        "Boom-bust, how many times: samples with items waiting next to an idle worker.",
        lambda p: Total(WAITING_NEXT_TO_IDLE, p),
        recent=True,
        unit="samples",
    ),
    Measure(
        "busy_excess",
        "Boom-bust seen in step: share of workers busy at the sampling instants minus the share busy "
        "over the window (from the idle-time counter). In a pool whose work does not follow a clock "
        "the two agree: the samples land at random moments. Workers that poll in step, sampled at (a "
        "multiple of) their poll period, are caught at the same phase every time: right after they "
        "woke together, far busier than they are on average.",
        lambda p: Diff(_sampled_busy_ratio(p), Diff(Number(1.0), _counted_idle_ratio(p))),
        recent=True,
    ),
    Measure(
        "busy_excess_low",
        "The busy excess of most samples: the 25th percentile of the share of workers busy at the "
        "samples, minus the share busy over the window. Pollers caught at the same phase every time "
        "are busier than average at nearly every sample; a bursty pool is caught busy by a few "
        "samples that land on its bursts, and its other samples are not.",
        lambda p: Diff(LowQuartile(BUSY_SHARE, p), Diff(Number(1.0), _counted_idle_ratio(p))),
        recent=True,
    ),
    Measure(
        "depth_now",
        "Items waiting at the newest sample.",
        lambda p: Latest(DEPTH),
        unit="items",
    ),
    Measure(
        "depth_first",
        "Items waiting at the oldest sample of the part.",
        lambda p: Earliest(DEPTH, p),
        recent=True,
        unit="items",
    ),
    Measure(
        "depth_max_first_third",
        "Highest depth in the oldest third of the window.",
        lambda p: MaxOfFirst(DEPTH, 3),
        unit="items",
    ),
    Measure(
        "depth_min_last_third",
        "Lowest depth in the newest third of the window.",
        lambda p: MinOfLast(DEPTH, 3),
        unit="items",
    ),
    Measure(
        "capacity",
        "The queue's maximum size (bounded queues).",
        lambda p: Latest(CAPACITY),
        unit="items",
    ),
)

MEASURE: dict[str, Measure] = {m.name: m for m in MEASURES}


def _near_full() -> Agg:
    return Product(Setting("overflow_near_capacity"), M("capacity"))


def _boom_bust(part: Part, suffix: str) -> Pred:
    """The evidence for boom-bust over one part of the window.

    In the samples: workers idle next to waiting work, a real share of the pool
    and for long enough (a quarter of the pool or more however short each wait,
    as with fast pollers under heavy load), in a good share of the samples; or
    waits of a second or more, seen in fewer samples but cycle after cycle (a
    lightly loaded pool that sleeps between polls). Or, when the samples land in step
    with the polls (sampling at a multiple of the poll period), a pool caught
    far busier at the samples than it is over time, with items seen waiting
    next to idle workers, or by a wide margin at nearly every sample.
    """
    return any_of(
        all_of(
            any_of(
                all_of(
                    at_least(M("idle_capacity_share", part), f"boom_bust_idle_capacity_{suffix}"),
                    at_least(M("idle_wait_s", part), f"boom_bust_idle_wait_{suffix}"),
                ),
                all_of(
                    at_least(M("idle_capacity_share", part), f"boom_bust_crowded_{suffix}"),
                    at_least(M("idle_wait_s", part), "boom_bust_idle_wait_off"),
                ),
            ),
            at_least(M("waiting_idle_share", part), f"boom_bust_regular_{suffix}"),
        ),
        all_of(
            at_least(M("idle_capacity_share", part), f"boom_bust_idle_capacity_{suffix}"),
            at_least(M("idle_wait_s", part), f"boom_bust_long_wait_{suffix}"),
            at_least(M("waiting_idle_share", part), f"boom_bust_waiting_idle_{suffix}"),
            at_least(M("waiting_idle_samples", part), f"boom_bust_sightings_{suffix}"),
        ),
        all_of(
            at_least(M("waiting_idle_share", part), f"boom_bust_waiting_idle_{suffix}"),
            at_least(M("busy_excess", part), f"boom_bust_busy_excess_{suffix}"),
        ),
        all_of(
            at_least(M("busy_excess", part), f"boom_bust_in_step_{suffix}"),
            at_least(M("busy_excess_low", part), f"boom_bust_in_step_floor_{suffix}"),
        ),
    )


_R = Part.RECENT
_PROCESSED_UNKNOWN = "items processed are unknown (processed_total is null)"

RULES: tuple[ConditionRule, ...] = (
    ConditionRule(
        Condition.STALLED,
        on=all_of(
            equals(M("processed"), 0),
            above(M("depth_now"), 0),
            at_least(M("waiting_share"), "stalled_waiting_share"),
        ),
        hold=all_of(
            equals(M("processed"), 0),
            above(M("depth_now"), 0),
            at_least(M("waiting_share"), "stalled_waiting_share"),
        ),
        requires=(Requirement(_PROCESSED_UNKNOWN, fields=("processed_total",)),),
    ),
    ConditionRule(
        Condition.OVERFLOW,
        on=any_of(
            # A bounded queue whose backlog sits near capacity.
            all_of(
                at_least(M("near_capacity_share"), "overflow_full_on"),
                at_least(M("near_capacity_share", _R), "overflow_full_off"),
            ),
            # Any queue: a backlog that keeps growing because arrivals outpace processing. A
            # trend, not noise: every depth in the newest third of the window is above every
            # depth in the oldest third (or at capacity), by a real share of the work done.
            Unless(
                all_of(
                    at_least(M("waiting_share"), "overflow_backlog_share"),
                    any_of(
                        above(M("depth_min_last_third"), M("depth_max_first_third")),
                        at_least(M("depth_min_last_third"), _near_full()),
                    ),
                    any_of(
                        at_least(
                            Diff(M("depth_min_last_third"), M("depth_max_first_third")),
                            Product(Setting("overflow_growth_on"), M("processed")),
                        ),
                        equals(M("processed"), 0),
                        Unknown(M("processed")),
                        at_least(M("depth_min_last_third"), _near_full()),
                    ),
                ),
                any_of(
                    below(M("enqueued"), Product(Setting("overflow_inflow_on"), M("processed"))),
                    equals(M("enqueued"), 0),
                ),
            ),
        ),
        hold=any_of(
            at_least(M("near_capacity_share", _R), "overflow_full_off"),
            # Held while the backlog stays and is not shrinking.
            Unless(
                all_of(
                    at_least(M("waiting_share", _R), "overflow_backlog_share"),
                    at_least(M("depth_now"), M("depth_first", _R)),
                ),
                any_of(
                    below(M("enqueued", _R), Product(Setting("overflow_inflow_off"), M("processed", _R))),
                    equals(M("enqueued", _R), 0),
                ),
            ),
        ),
        requires=(),
    ),
    ConditionRule(
        Condition.RATE_LIMITED,
        on=all_of(
            at_least(M("attempts"), "rate_limited_min_calls"),
            at_least(M("rate_limited_ratio"), "rate_limited_on"),
            at_least(M("rate_limited_ratio", _R), "rate_limited_off"),
        ),
        hold=all_of(
            at_least(M("attempts"), "rate_limited_min_calls"),
            at_least(M("rate_limited_ratio", _R), "rate_limited_off"),
        ),
        requires=(
            Requirement(
                "downstream calls or 429s are unknown (attempts_total or rate_limited_total is null)",
                fields=("attempts_total", "rate_limited_total"),
            ),
        ),
    ),
    ConditionRule(
        Condition.BOOM_BUST,
        on=all_of(above(M("processed"), 0), _boom_bust(Part.WHOLE, "on"), _boom_bust(_R, "off")),
        hold=all_of(above(M("processed"), 0), _boom_bust(_R, "off")),
        requires=(
            Requirement("busy workers are unknown (busy or workers is null)", fields=("busy", "workers")),
            Requirement(_PROCESSED_UNKNOWN, fields=("processed_total",)),
        ),
    ),
    ConditionRule(
        Condition.IDLE,
        # The queue stays empty: few items caught between arrival and pickup, and
        # none waiting long next to an idle worker (that is work left waiting).
        on=Unless(
            all_of(
                at_least(M("idle_ratio"), "idle_on"),
                at_least(M("idle_ratio", _R), "idle_off"),
                at_least(M("no_backlog_share"), "idle_empty_share"),
                at_least(M("no_backlog_share", _R), "idle_empty_share"),
            ),
            at_least(M("idle_wait_s"), "boom_bust_idle_wait_on"),
        ),
        hold=Unless(
            all_of(
                at_least(M("idle_ratio", _R), "idle_off"),
                at_least(M("no_backlog_share", _R), "idle_empty_share"),
            ),
            at_least(M("idle_wait_s", _R), "boom_bust_idle_wait_on"),
        ),
        requires=(
            Requirement(
                "idle time and busy workers are unknown (idle_s_total and busy are null)",
                any_field=("idle_s_total", "busy"),
            ),
            Requirement(
                "idle time is unknown (idle_s_total is null) and items were processed: "
                "sampled busy counts alone cannot tell",
                measure="idle_ratio",
            ),
        ),
    ),
)

RULE: dict[Condition, ConditionRule] = {r.condition: r for r in RULES}
