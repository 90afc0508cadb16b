"""The sliding window: bounded, time-based, reset-aware."""

from __future__ import annotations

import pytest

from qhealth import Sample, Window
from qhealth._window import counter_increase


def sample(t: float, depth: int = 0, processed: int | None = 0, idle: float | None = 0.0) -> Sample:
    return Sample(
        t=t,
        depth=depth,
        workers=2,
        busy=0,
        enqueued_total=0,
        processed_total=processed,
        failed_total=0,
        attempts_total=0,
        rate_limited_total=0,
        idle_s_total=idle,
    )


def test_it_keeps_exactly_the_span_and_no_more() -> None:
    window = Window(span_s=10, max_samples=100)
    for t in range(30):
        window.append(sample(float(t)))
    assert [s.t for s in window.samples] == [float(t) for t in range(19, 30)]
    assert window.covered_s == 10
    assert len(window.intervals) == len(window.samples) - 1


def test_it_never_holds_more_than_max_samples() -> None:
    window = Window(span_s=1000, max_samples=5)
    for t in range(50):
        window.append(sample(float(t)))
    assert len(window) == 5
    assert len(window.intervals) == 4
    assert [iv.start.t for iv in window.intervals] == [45.0, 46.0, 47.0, 48.0]


def test_intervals_hold_counter_increases() -> None:
    window = Window(span_s=60, max_samples=100)
    window.append(sample(0, processed=10, idle=1.0))
    window.append(sample(1, processed=25, idle=2.5))
    (interval,) = window.intervals
    assert (interval.processed, interval.idle_s, interval.dt) == (15, 1.5, 1)
    assert interval.worker_seconds == 2


def test_a_counter_that_goes_down_was_reset_and_counts_from_zero() -> None:
    assert counter_increase(100, 130) == 30
    assert counter_increase(100, 7) == 7  # process restarted, then processed 7
    assert counter_increase(None, 7) is None
    window = Window(span_s=60, max_samples=100)
    for t, processed in enumerate([100, 150, 5, 20]):
        window.append(sample(float(t), processed=processed))
    assert [iv.processed for iv in window.intervals] == [50, 5, 15]


def test_an_unknown_counter_makes_its_increase_unknown() -> None:
    window = Window(span_s=60, max_samples=100)
    window.append(sample(0, processed=None))
    window.append(sample(1, processed=None))
    assert [iv.processed for iv in window.intervals] == [None]


def test_samples_must_move_forward_in_time() -> None:
    window = Window(span_s=60, max_samples=100)
    window.append(sample(5))
    with pytest.raises(ValueError, match="increase"):
        window.append(sample(5))


@pytest.mark.parametrize(("span", "size"), [(0, 10), (-1, 10), (float("nan"), 10), (10, 1)])
def test_a_window_that_cannot_work_is_refused(span: float, size: int) -> None:
    with pytest.raises(ValueError):
        Window(span_s=span, max_samples=size)
