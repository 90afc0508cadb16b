"""The classifier's running sums give what a full recomputation over the window gives."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from qhealth import ClassifierConfig, Sample, classify, read_trace
from qhealth._classifier import Classifier, judge
from qhealth._evaluate import Evaluation, SeriesComputer
from qhealth._measures import MEASURES
from qhealth._window import Window

from .conftest import TRACES

ALL_TRACES = sorted(TRACES.glob("*.jsonl")) + sorted((TRACES / "wide").glob("*.jsonl"))


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.parametrize("path", ALL_TRACES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_measure_and_verdict_equals_a_full_recomputation(path: Path) -> None:
    trace = read_trace(path)
    cfg = ClassifierConfig()
    classifier = Classifier(trace.header.interval_s, cfg, trace.header.capacity)
    window = classifier.window
    assert window.keeps_sums
    recent = cfg.clear_fraction * window.span_s
    for sample in trace.samples:
        running = classifier.update(sample)
        if running.state == "warming_up":
            continue
        full = Evaluation.of_rows(
            window.rows, cfg, interval_s=trace.header.interval_s, span_s=window.span_s, recent_s=recent
        )
        fast = Evaluation(window, cfg)
        for measure in MEASURES:
            for part in measure.parts:
                a, b = fast.measure(measure.name, part), full.measure(measure.name, part)
                assert _same(a, b), (sample.t, measure.name, part, a, b)
        # The same window judged without running sums: the same verdict.
        plain = Window(window.span_s, 10_000)
        for s in window.samples:
            plain.append(s)
        previous = frozenset(running.conditions)  # hysteresis aside, the measures decide alike
        again = judge(plain, previous, cfg, trace.header.capacity, interval_s=trace.header.interval_s)
        assert again.idle_ratio == running.idle_ratio or _same(again.idle_ratio, running.idle_ratio)


def test_a_counter_reset_inside_the_window_counts_what_came_after_it() -> None:
    cfg = ClassifierConfig(window_s=10)
    samples = [
        Sample(t=float(t), depth=0, workers=1, busy=0, processed_total=p, idle_s_total=float(t))
        for t, p in enumerate([100, 110, 120, 5, 15, 25, 35, 45, 55, 65, 75, 85, 95])
    ]
    verdicts = classify(samples, 1.0, cfg)
    # At t=12 the window's counters run t=2..12: 120, then a restart (5), ..., 95.
    assert verdicts[12].throughput == pytest.approx((95 - 120 + 120) / 10), "95 processed since the restart"
    # At t=10: t=0..10: 100, 110, 120, then 5 ... 75: 20 before the restart and 75 after.
    assert verdicts[10].throughput == pytest.approx((75 - 100 + 120) / 10)


def test_a_window_full_to_its_bound_still_sums_what_it_holds() -> None:
    """More samples inside the span than the window may hold: the oldest go, and leave the sums."""
    computer = SeriesComputer(ClassifierConfig(), None)
    window = Window(100, 5, row=computer.row, interval_s=1.0, recent_s=50)
    for t in range(20):
        window.append(Sample(t=float(t), depth=t, workers=1, busy=1, processed_total=t))
    assert len(window) == 5
    full = Evaluation.of_rows(window.rows, ClassifierConfig(), interval_s=1.0, span_s=100, recent_s=50)
    fast = Evaluation(window, ClassifierConfig())
    for name in ("waiting_share", "processed", "throughput", "depth_first"):
        assert _same(fast.measure(name), full.measure(name)), name
