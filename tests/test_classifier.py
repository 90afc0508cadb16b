"""The classifier, specified by the situations it must tell apart.

Scenarios come from the pool simulation in ``simpool`` (mechanics, not drawn
curves) or, where exact numbers matter, from traces built by hand.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import pytest

from qhealth import ClassifierConfig, Condition, Health, Sample, classify
from qhealth._classifier import Classifier

from .simpool import Pool, after, batches, combined, poisson, until

BOOM, IDLE, OVER, RATE, STALL = (
    Condition.BOOM_BUST,
    Condition.IDLE,
    Condition.OVERFLOW,
    Condition.RATE_LIMITED,
    Condition.STALLED,
)


def run(pool: Pool, duration: float, interval: float = 1.0) -> tuple[list[Sample], list[Health]]:
    header, samples = pool.run(duration, interval)
    return samples, classify(samples, interval, capacity=header.capacity)


def settled(verdicts: list[Health], after_t: float) -> list[Health]:
    return [h for h in verdicts if h.t >= after_t]


def condition_sets(verdicts: list[Health]) -> set[frozenset[Condition]]:
    return {h.conditions for h in verdicts}


def synth(
    n: int,
    interval: float = 1.0,
    *,
    workers: int = 10,
    depth: Callable[[float], int] = lambda t: 0,
    busy: Callable[[float], int] = lambda t: 0,
    arrivals: float = 0.0,
    processed: float = 0.0,
    idle_per_s: float | None = None,
    attempts: float | None = None,
    limited: float = 0.0,
    known: bool = True,
) -> list[Sample]:
    """A hand-built trace with constant rates (per second)."""
    out = []
    for i in range(n):
        t = i * interval
        idle = (workers - busy(t)) * t if idle_per_s is None else idle_per_s * t
        out.append(
            Sample(
                t=t,
                depth=depth(t),
                workers=workers if known else None,
                busy=busy(t) if known else None,
                enqueued_total=round(arrivals * t) if known else None,
                processed_total=round(processed * t) if known else None,
                failed_total=0 if known else None,
                attempts_total=round((attempts if attempts is not None else processed) * t)
                if known
                else None,
                rate_limited_total=round(limited * t) if known else None,
                idle_s_total=idle if known else None,
            )
        )
    return out


# -- the health-monitor defects of shared/seed-defects.md ------------------------


def test_a_10_slot_queue_swinging_full_and_empty_is_boom_bust() -> None:
    pool = Pool(workers=4, service_s=0.05, arrivals=poisson(30), poll_period=3, capacity=10)
    samples, verdicts = run(pool, 240)
    assert max(s.depth for s in samples) == 10
    late = settled(verdicts, 60)
    assert all(BOOM in h.conditions for h in late)


def test_periodic_batches_into_blocking_workers_are_healthy() -> None:
    """40 jobs every 10 s to 10 blocking workers: ~37% busy, waits of seconds,
    depth swinging 0..30 -- and no boom-bust, because no worker is ever idle
    while an item waits."""
    pool = Pool(workers=10, service_s=0.9, arrivals=batches(40, every=10, phase=0.3))
    samples, verdicts = run(pool, 300)
    assert max(s.depth for s in samples) >= 25
    assert all(not h.conditions for h in settled(verdicts, 60))


def test_a_spike_hidden_between_coarse_samples_is_not_idle() -> None:
    """100 items every 5 s, drained between two 5 s samples: every sample
    shows an empty queue and no busy worker, yet the pool works 40% of the
    time. The idle-time counter sees what the samples miss."""
    pool = Pool(workers=10, service_s=0.2, arrivals=batches(100, every=5, phase=0.2))
    samples, verdicts = run(pool, 300, interval=5)
    assert all(s.depth == 0 and s.busy == 0 for s in samples[1:]), "the samples are aliased"
    late = settled(verdicts, 60)
    assert all(IDLE not in h.conditions for h in late)
    assert all(h.idle_ratio is not None and h.idle_ratio < 0.7 for h in late)


def test_workers_92_percent_busy_are_not_idle() -> None:
    samples, verdicts = run(Pool(workers=10, service_s=0.2, arrivals=poisson(46)), 240)
    assert sum(s.busy or 0 for s in samples) / sum(s.workers or 0 for s in samples) > 0.85
    late = settled(verdicts, 60)
    assert all(not h.conditions for h in late)
    assert all(h.idle_ratio is not None and h.idle_ratio < 0.2 for h in late)


def test_an_unbounded_backlog_growing_from_0_to_900_is_overflow() -> None:
    samples = synth(100, depth=lambda t: int(9 * t), busy=lambda t: 10, arrivals=29, processed=20)
    verdicts = classify(samples, 1.0)
    assert samples[-1].depth >= 890
    assert all(OVER in h.conditions for h in settled(verdicts, 60))
    assert "backlog grew" in verdicts[-1].findings[0].reason


@pytest.mark.parametrize("scale", [1, 1000])
def test_thresholds_are_relative_to_the_pool_not_absolute(scale: int) -> None:
    """The same shape at 1x and 1000x (capacity, depth, traffic) gets the same
    verdicts: a 10,000-slot queue swinging 0..21 is nothing; a 10-slot one
    swinging 0..21 would be full."""
    samples = synth(
        120,
        depth=lambda t: (21 * scale) if int(t) % 4 == 0 else 0,
        busy=lambda t: 10 if int(t) % 4 == 0 else 4,
        idle_per_s=10 - (10 + 3 * 4) / 4,  # the idle time those busy counts add up to
        arrivals=5.0 * scale,
        processed=5.0 * scale,
    )
    verdicts = classify(samples, 1.0, capacity=10_000 * scale)
    assert {frozenset()} == condition_sets(settled(verdicts, 60))


def test_reasons_state_the_real_window_and_numbers_at_any_sampling_interval() -> None:
    samples = synth(100, workers=26, arrivals=0, processed=0)
    (finding,) = classify(samples, 1.0)[-1].findings
    assert finding.condition == IDLE
    assert "over 60 s" in finding.reason and "26 workers" in finding.reason and "100%" in finding.reason
    assert finding.hint == "scale down to 1 worker"


# -- boom-bust at any sampling interval ----------------------------------------------


def test_synchronised_polling_is_boom_bust_at_fine_sampling() -> None:
    _, verdicts = run(Pool(workers=10, service_s=0.1, arrivals=poisson(30), poll_period=4), 240)
    late = settled(verdicts, 60)
    assert all(h.conditions == {BOOM} for h in late)
    assert "poll on a fixed interval" in late[-1].findings[0].hint


def test_synchronised_polling_is_boom_bust_even_sampled_every_15_s() -> None:
    """15 s samples of a pool polling every 5 s: the oscillation is invisible in
    the depth curve, but idle time keeps accruing while items wait."""
    _, verdicts = run(Pool(workers=10, service_s=0.1, arrivals=poisson(30), poll_period=5), 900, interval=15)
    assert verdicts[7].state == "warming_up", "the window spans 8 intervals: 120 s"
    late = settled(verdicts, 120)
    assert late and all(BOOM in h.conditions for h in late)


def test_blocking_workers_with_bursty_traffic_are_not_boom_bust() -> None:
    arrivals = combined(poisson(15), batches(60, every=17, phase=3))
    _, verdicts = run(Pool(workers=12, service_s=0.25, arrivals=arrivals), 300)
    assert all(not h.conditions for h in settled(verdicts, 60))


# -- onset, clearing and hysteresis ----------------------------------------------


def test_a_condition_is_reported_within_one_window_and_cleared_within_one_window() -> None:
    pool = Pool(
        workers=10, service_s=0.1, arrivals=poisson(30), poll_period=4, poll_switch_at=120, poll_until=300
    )
    _, verdicts = run(pool, 480)
    on = [h.t for h in verdicts if BOOM in h.conditions]
    assert on, "the poll bug was seen"
    assert 120 <= min(on) <= 180
    assert 300 <= max(on) <= 360
    assert all(BOOM in h.conditions for h in verdicts if 180 <= h.t < 300)


def test_a_rate_hovering_at_the_threshold_does_not_flap() -> None:
    rng = random.Random(7)
    attempts = limited = 0
    samples = []
    for t in range(600):
        calls = 100
        attempts += calls
        limited += round(calls * rng.uniform(0.07, 0.13))
        samples.append(
            Sample(
                t=float(t),
                depth=0,
                workers=10,
                busy=5,
                enqueued_total=50 * t,
                processed_total=50 * t,
                failed_total=0,
                attempts_total=attempts,
                rate_limited_total=limited,
                idle_s_total=5.0 * t,
            )
        )
    states = [RATE in h.conditions for h in classify(samples, 1.0)[60:]]
    flips = sum(1 for a, b in itertools.pairwise(states) if a != b)
    assert flips <= 2


def test_the_429_storm_is_seen_and_cleared() -> None:
    pool = Pool(workers=20, service_s=0.2, arrivals=poisson(30), rate_limit=25)
    _, verdicts = run(pool, 200)
    late = settled(verdicts, 60)
    assert all(RATE in h.conditions for h in late)
    assert "answered 429" in next(f.reason for f in late[-1].findings if f.condition == RATE)


def test_it_warms_up_for_one_window() -> None:
    verdicts = classify(synth(80), 1.0)
    assert {h.state for h in verdicts[:60]} == {"warming_up"}
    assert verdicts[60].state != "warming_up"


# -- stalls --------------------------------------------------------------------------


def test_hung_workers_with_traffic_arriving_are_stalled_and_overflowing() -> None:
    _, verdicts = run(Pool(workers=10, service_s=0.2, arrivals=poisson(20), hang_at=30), 200)
    late = settled(verdicts, 100)
    assert all(h.conditions == {STALL, OVER} and h.state == "stalled" for h in late)
    assert "hangs" in late[-1].findings[0].hint


@pytest.mark.parametrize(
    ("workers", "busy", "why"),
    [(0, 0, "no workers are running"), (10, 10, "hold an item"), (10, 0, "10 of 10 workers idle")],
)
def test_a_stall_says_what_kind_it_is(workers: int, busy: int, why: str) -> None:
    samples = synth(
        80,
        workers=workers,
        depth=lambda t: 500,
        busy=lambda t: busy,
        arrivals=0,
        processed=0,
        idle_per_s=float(workers - busy),
    )
    health = classify(samples, 1.0)[-1]
    assert health.state == "stalled"
    assert why in health.findings[0].reason


def test_a_queue_that_drains_slowly_is_not_stalled() -> None:
    samples = synth(80, depth=lambda t: 500 - int(t), busy=lambda t: 10, processed=1.0)
    assert STALL not in classify(samples, 1.0)[-1].conditions


# -- what the window gives besides conditions -----------------------------------------


def test_recommended_workers_follow_littles_law_at_the_target_utilisation() -> None:
    # 20 items/s, each holding a worker 0.2 s -> 4 busy on average -> 4 / 0.7 -> 6.
    samples = synth(80, workers=10, busy=lambda t: 4, arrivals=20, processed=20, idle_per_s=6.0)
    health = classify(samples, 1.0)[-1]
    assert health.idle_ratio == pytest.approx(0.6)
    assert health.throughput == pytest.approx(20, rel=0.02)
    assert health.workers_recommended == 6
    config = ClassifierConfig(target_utilization=0.5)
    assert classify(samples, 1.0, config)[-1].workers_recommended == 8


def test_recommended_workers_are_capped_by_what_the_downstream_accepts() -> None:
    # 40 items/s arrive, but the API accepts 20 calls/s (the rest are 429s):
    # more workers would only make more 429s.
    samples = synth(
        80,
        workers=30,
        busy=lambda t: 30,
        depth=lambda t: int(20 * t),
        arrivals=40,
        processed=20,
        attempts=60,
        limited=40,
        idle_per_s=0.0,
    )
    health = classify(samples, 1.0)[-1]
    assert RATE in health.conditions
    assert health.rate_limited_ratio == pytest.approx(2 / 3, rel=0.01)
    # hold time = 30 worker-s / 20 items = 1.5 s; 20 items/s x 1.5 s / 0.7 = 43.
    assert health.workers_recommended == 43


# -- sources that know less -------------------------------------------------------


def test_a_depth_only_source_is_judged_on_depth_and_says_what_it_cannot_judge() -> None:
    samples = synth(100, depth=lambda t: int(9 * t), known=False)
    health = classify(samples, 1.0)[-1]
    assert health.conditions == {OVER}
    # Idle is judged (no: the queue is not empty); the others need what is unknown.
    assert set(health.not_judged) == {STALL, RATE, BOOM, IDLE}
    assert "null" in health.not_judged[RATE]
    assert health.idle_ratio is None and health.rate_limited_ratio is None


def test_a_classifier_can_be_reset() -> None:
    classifier = Classifier(1.0)
    for sample in synth(80):
        classifier.update(sample)
    classifier.reset()
    assert classifier.update(synth(1)[0]).state == "warming_up"


def test_settings_are_validated_by_name() -> None:
    with pytest.raises(ValueError, match="'idle_on'"):
        ClassifierConfig(idle_on=1.5)
    with pytest.raises(ValueError, match=r"'rate_limited_off'.*off threshold"):
        ClassifierConfig(rate_limited_on=0.1, rate_limited_off=0.2)
    with pytest.raises(ValueError, match="unknown classifier setting 'idel_on'"):
        ClassifierConfig().with_overrides({"idel_on": 0.9})
    assert ClassifierConfig().with_overrides({"window_s": "120"}).span_for(15) == 120
    assert ClassifierConfig().span_for(15) == 120 and ClassifierConfig().span_for(1) == 60


def test_after_and_until_compose_arrival_phases() -> None:
    # (a check of the simulation helper the other tests rely on)
    arrivals = combined(until(10, batches(5, every=1)), after(20, batches(1, every=1)))
    rng = random.Random(1)
    assert arrivals(0.5, 1.5, rng) == 5 and arrivals(15, 16, rng) == 0 and arrivals(20.5, 21.5, rng) == 1
