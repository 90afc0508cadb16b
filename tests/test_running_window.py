"""The classifier's running sums give what a full recomputation over the window gives."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from qhealth import ClassifierConfig, Condition, Sample, classify, read_trace
from qhealth._classifier import Classifier, judge
from qhealth._evaluate import Evaluation, SeriesComputer
from qhealth._measures import MEASURES
from qhealth._running import RunningWindow
from qhealth._window import Window

from .conftest import TRACES

ALL_TRACES = sorted(TRACES.glob("*.jsonl")) + sorted((TRACES / "wide").glob("*.jsonl"))


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("path", ALL_TRACES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_verdict_and_measure_equals_a_full_recomputation(path: Path) -> None:
    """At every sample the verdict equals a classifier that recomputes each measure from the
    whole window; every fifth judged sample, so does every measure of both parts."""
    trace = read_trace(path)
    cfg = ClassifierConfig()
    interval, capacity = trace.header.interval_s, trace.header.capacity
    classifier = Classifier(interval, cfg, capacity)
    window = classifier.window
    computer = SeriesComputer(cfg, capacity)
    plain = Window(window.span_s, window_max(classifier), row=computer.row)
    recent = cfg.clear_fraction * window.span_s
    previous: frozenset[Condition] = frozenset()
    judged = 0
    for sample in trace.samples:
        running = classifier.update(sample)
        plain.append(sample)
        reference = judge(plain, previous, cfg, capacity, interval_s=interval)
        previous = reference.conditions
        assert running.conditions == reference.conditions, sample.t
        assert running.state == reference.state
        if running.state == "warming_up":
            continue
        judged += 1
        if judged % 5:
            continue
        full = Evaluation.of_rows(
            [computer.row(s) for s in plain.samples],
            cfg,
            interval_s=interval,
            span_s=window.span_s,
            recent_s=recent,
        )
        fast = Evaluation(window, cfg)
        for measure in MEASURES:
            for part in measure.parts:
                a, b = fast.measure(measure.name, part), full.measure(measure.name, part)
                assert _same(a, b), (sample.t, measure.name, part, a, b)


def window_max(classifier: Classifier) -> int:
    return math.ceil(classifier.window.span_s / classifier.interval_s) * 2 + 2


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
    window = RunningWindow(100, 5, computer, interval_s=1.0, recent_s=50)
    for t in range(20):
        window.append(Sample(t=float(t), depth=t, workers=1, busy=1, processed_total=t))
    assert len(window) == 5
    rows = [computer.row(s) for s in window.samples]
    full = Evaluation.of_rows(rows, ClassifierConfig(), interval_s=1.0, span_s=100, recent_s=50)
    fast = Evaluation(window, ClassifierConfig())
    for name in ("waiting_share", "processed", "throughput", "depth_first"):
        assert _same(fast.measure(name), full.measure(name)), name


def test_the_generated_sample_series_equal_the_definition_evaluated_node_by_node() -> None:
    """The series are compiled into one generated function; the slow node-by-node
    evaluation of the same definition gives the same values on every combination."""
    import itertools

    from qhealth._evaluate import _compile
    from qhealth._measures import SERIES

    cfg = ClassifierConfig()
    for capacity in (None, 50):
        computer = SeriesComputer(cfg, capacity)
        reference = [_compile(series.expr, cfg, capacity) for series in SERIES]
        for depth, workers, busy in itertools.product([0, 1, 3, 60], [None, 0, 2, 10], [None, 0, 1, 2, 10]):
            sample = Sample(t=0.0, depth=depth, workers=workers, busy=busy)
            assert computer.row(sample).values == tuple(fn(sample) for fn in reference)
