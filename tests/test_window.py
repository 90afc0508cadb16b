"""The sliding window: bounded, time-based, one record per sample."""

from __future__ import annotations

import pytest

from qhealth import ClassifierConfig, Sample
from qhealth._evaluate import SeriesComputer
from qhealth._measures import SERIES
from qhealth._window import Window, counter_increase


def sample(t: float, depth: int = 0) -> Sample:
    return Sample(t=t, depth=depth, workers=2, busy=0, processed_total=0, idle_s_total=0.0)


def test_it_keeps_exactly_the_span_and_no_more() -> None:
    window = Window(span_s=10, max_samples=100)
    for t in range(30):
        window.append(sample(float(t)))
    assert [s.t for s in window.samples] == [float(t) for t in range(19, 30)]
    assert window.covered_s == 10


def test_it_never_holds_more_than_max_samples() -> None:
    window = Window(span_s=1000, max_samples=5)
    for t in range(50):
        window.append(sample(float(t)))
    assert len(window) == 5
    assert [s.t for s in window.samples] == [45.0, 46.0, 47.0, 48.0, 49.0]


def test_each_sample_is_kept_with_its_sample_series_computed_once() -> None:
    computer = SeriesComputer(ClassifierConfig(), capacity=None)
    window = Window(span_s=10, max_samples=100, row=computer.row)
    window.append(sample(0, depth=3))
    (row,) = window.rows
    values = dict(zip((s.name for s in SERIES), row.values, strict=True))
    assert values["queue_depth"] == 3 and values["waiting"] == 1
    assert values["idle_next_to_work"] == 2, "min(3 items, 2 idle workers)"
    assert values["queue_capacity"] is None, "unbounded"


def test_a_counter_that_goes_down_was_reset_and_counts_from_zero() -> None:
    assert counter_increase(100, 130) == 30
    assert counter_increase(100, 7) == 7  # process restarted, then processed 7
    assert counter_increase(None, 7) is None


def test_samples_must_move_forward_in_time() -> None:
    window = Window(span_s=60, max_samples=100)
    window.append(sample(5))
    with pytest.raises(ValueError, match="increase"):
        window.append(sample(5))


@pytest.mark.parametrize(("span", "size"), [(0, 10), (-1, 10), (float("nan"), 10), (10, 1)])
def test_a_window_that_cannot_work_is_refused(span: float, size: int) -> None:
    with pytest.raises(ValueError):
        Window(span_s=span, max_samples=size)
