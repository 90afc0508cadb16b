"""The rules and the classifier are one definition: run by promtool, they agree point by point.

Two kinds of check, both run by the real ``promtool test rules``:

* agreement: on every example trace and every trace of ``shared/traces/wide/``, each
  measure the rules record equals the classifier's on the same samples (within 1e-6,
  relative), and the conditions are the classifier's, hysteresis included;
* labels: on the example traces, at their own sampling interval and resampled to
  15 s and 30 s (Prometheus' default scrape interval, and a slow one), the rules'
  verdict is the labeled one at every labeled sample, and each alert fires once its
  ``for:`` has passed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qhealth import ClassifierConfig, Trace, read_trace
from qhealth.rules import RulesConfig, build, dump, render
from qhealth.rules.promtool import (
    Segment,
    alert_timings,
    build_agreement_test,
    build_test,
    read_labels,
    resample,
)

from .conftest import TRACES
from .services import need_tool, run

EXAMPLES = sorted(TRACES.glob("*.jsonl"))
WIDE = sorted((TRACES / "wide").glob("*.jsonl"))


def _promtool(test: dict[str, object], rules: RulesConfig, tmp_path: Path) -> str:
    """Run a promtool test against the rules of ``rules``; the failures, or '' when it passed."""
    (tmp_path / "rules.yml").write_text(render(build(rules)), encoding="utf-8")
    path = tmp_path / "test.yml"
    path.write_text(dump(test), encoding="utf-8")
    result = run(need_tool("promtool", "prometheus"), "test", "rules", str(path), timeout=300)
    return "" if result.returncode == 0 else (result.stdout[-3000:] + result.stderr[-1000:])


def _agreement(path: Path, tmp_path: Path, every: int) -> None:
    trace = read_trace(path)
    rules = RulesConfig(scrape_interval_s=trace.header.interval_s)
    test = build_agreement_test(trace, ["rules.yml"], rules, every=every, name=path.name, source=str(path))
    failures = _promtool(test, rules, tmp_path)
    assert not failures, f"the rules and the classifier disagree on {path.name}:\n{failures}"


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_rules_compute_every_measure_and_condition_as_the_classifier_on_the_examples(
    path: Path, tmp_path: Path
) -> None:
    _agreement(path, tmp_path, every=2)


@pytest.mark.slow
@pytest.mark.parametrize("path", WIDE, ids=lambda p: p.stem)
def test_rules_compute_every_measure_and_condition_as_the_classifier_on_wide(
    path: Path, tmp_path: Path
) -> None:
    _agreement(path, tmp_path, every=10)


@pytest.mark.slow
def test_the_agreement_check_fails_when_a_back_end_computes_differently(tmp_path: Path) -> None:
    """The same generated test against rules built with another threshold fails."""
    trace = read_trace(TRACES / "transition-429-storm.jsonl")
    rules = RulesConfig(scrape_interval_s=trace.header.interval_s)
    test = build_agreement_test(trace, ["rules.yml"], rules, every=4)
    other = RulesConfig(
        scrape_interval_s=trace.header.interval_s,
        classifier=ClassifierConfig(rate_limited_on=1.0, rate_limited_off=1.0),
    )
    failures = _promtool(test, other, tmp_path)
    assert 'condition="rate_limited"' in failures and "got: nil" in failures


def _at(path: Path, interval: float | None) -> tuple[Trace, list[Segment]]:
    """The trace and its labels as a scraper every ``interval`` seconds sees them."""
    trace = read_trace(path)
    segments = read_labels(path.with_name(path.name.removesuffix(".jsonl") + ".labels.json"))
    native = trace.header.interval_s
    if interval is None or interval == native:
        return trace, segments
    cfg = ClassifierConfig()
    shift = cfg.span_for(interval) - cfg.span_for(native)
    return resample(trace, round(interval / native), segments, window_shift_s=shift)


def _labeled(path: Path, interval: float | None) -> bool:
    trace, segments = _at(path, interval)
    return any(g.t0 <= s.t < g.t1 for s in trace.samples for g in segments)


def _labels(path: Path, interval: float | None, tmp_path: Path) -> str:
    trace, segments = _at(path, interval)
    rules = RulesConfig(scrape_interval_s=trace.header.interval_s)
    test = build_test(trace, segments, ["rules.yml"], alert_timings(rules), name=path.name, source=str(path))
    return _promtool(test, rules, tmp_path)


#: Each example at its own interval and at 15 s and 30 s, where the longer window still leaves a
#: labeled sample (a phase shorter than the 4-minute window at 30 s cannot be judged there).
LABELED = [
    pytest.param(path, interval, id=f"{path.stem}-{'own' if interval is None else f'{interval:g}s'}")
    for path in EXAMPLES
    for interval in (None, 15.0, 30.0)
    if _labeled(path, interval)
]


@pytest.mark.slow
@pytest.mark.parametrize(("path", "interval"), LABELED)
def test_rules_say_what_the_labels_say_on_every_labeled_sample(
    path: Path, interval: float | None, tmp_path: Path
) -> None:
    """At the trace's own interval, and resampled to 15 s and 30 s scrapes (labels moved by the
    longer window): the verdict holds exactly the labeled conditions, and alerts fire after `for:`."""
    failures = _labels(path, interval, tmp_path)
    assert not failures, failures


@pytest.mark.slow
def test_the_labels_check_fails_when_the_rules_miss_a_condition(tmp_path: Path) -> None:
    path = TRACES / "rate-limited.jsonl"
    trace = read_trace(path)
    segments = read_labels(TRACES / "rate-limited.labels.json")
    rules = RulesConfig(
        scrape_interval_s=1, classifier=ClassifierConfig(rate_limited_on=1.0, rate_limited_off=1.0)
    )
    test = build_test(trace, segments, ["rules.yml"], alert_timings(rules), every=30)
    failures = _promtool(test, rules, tmp_path)
    assert 'condition="rate_limited"' in failures and "got: nil" in failures
