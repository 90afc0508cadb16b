"""The generated measures and predicates give what the definition gives evaluated node by node."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from qhealth import ClassifierConfig, Sample, read_trace
from qhealth._classifier import Classifier
from qhealth._evaluate import Evaluation
from qhealth._language import All, Any_, Check, M, Mean, Number, Part, Pred, Unknown, Unless, at_least
from qhealth._measures import DEPTH, MEASURES, RULE

from .conftest import TRACES

EXAMPLES = sorted(TRACES.glob("*.jsonl"))
WIDE = sorted((TRACES / "wide").glob("*.jsonl"))


def _same(a: float | bool | None, b: float | bool | None) -> bool:
    if a is None or b is None or isinstance(a, bool):
        return a is b
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


def _agree_along(path: Path, every: int) -> int:
    """Compare both evaluations of the classifier's own window at every ``every``-th
    judged sample of the trace; the number of samples compared."""
    trace = read_trace(path)
    cfg = ClassifierConfig()
    classifier = Classifier(trace.header.interval_s, cfg, trace.header.capacity)
    compared = 0
    for k, sample in enumerate(trace.samples):
        if classifier.update(sample).state == "warming_up" or k % every:
            continue
        generated = Evaluation(classifier.window, cfg)
        reference = Evaluation(classifier.window, cfg, reference=True)
        for rule in RULE.values():
            for pred in (rule.on, rule.hold):
                assert generated.check(pred) is reference.check(pred), (sample.t, rule.condition)
        for measure in MEASURES:
            for part in measure.parts:
                a, b = generated.measure(measure.name, part), reference.measure(measure.name, part)
                assert _same(a, b), (sample.t, measure.name, part, a, b)
        compared += 1
    return compared


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_measure_and_rule_agrees_on_the_example_traces(path: Path) -> None:
    assert _agree_along(path, every=3) > 10


@pytest.mark.slow
@pytest.mark.parametrize("path", WIDE, ids=lambda p: p.stem)
def test_every_measure_and_rule_agrees_on_the_wide_traces(path: Path) -> None:
    assert _agree_along(path, every=2) > 5


def _window_without_busy() -> Evaluation:
    """A window whose source knows workers but not busy ones: idle measures are unknown."""
    classifier = Classifier(1.0, ClassifierConfig(window_s=10))
    for t in range(15):
        classifier.update(Sample(t=float(t), depth=t % 3, workers=4, processed_total=t, enqueued_total=2 * t))
    return Evaluation(classifier.window, classifier.config)


UNKNOWN = at_least(M("idle_ratio"), 0.5)  # unknown: busy is never reported
TRUE = at_least(M("throughput"), 0.5)  # 1 item/s
FALSE = at_least(M("throughput"), 5.0)


@pytest.mark.parametrize(
    ("pred", "expected"),
    [
        (All((TRUE, UNKNOWN)), None),
        (All((UNKNOWN, FALSE)), False),
        (All((TRUE, TRUE)), True),
        (Any_((UNKNOWN, TRUE)), True),
        (Any_((FALSE, UNKNOWN)), None),
        (Any_((FALSE, FALSE)), False),
        (Unless(TRUE, UNKNOWN), True),
        (Unless(TRUE, TRUE), False),
        (Unless(UNKNOWN, FALSE), None),
        (Unknown(M("idle_ratio")), True),
        (Unknown(M("throughput")), False),
    ],
    ids=repr,
)
def test_unknown_measures_give_the_same_three_valued_answers(pred: Pred, expected: bool | None) -> None:
    ev = _window_without_busy()
    reference = Evaluation(ev.primitives, ev.cfg, reference=True)
    assert reference.check(pred) is expected
    assert ev.check(pred) is expected


def test_a_predicate_may_read_what_no_measure_reads() -> None:
    """A predicate written later (a test's, a user's) reading a primitive of its own gets a
    slot of its own; an evaluation made before it was compiled still answers it."""
    ev = _window_without_busy()
    assert ev.measure("throughput") == pytest.approx(1.0)
    slots = len(ev._memo)
    some_depth = Check(Mean(DEPTH, Part.WHOLE), ">=", Number(0.5))  # depth cycles 0, 1, 2
    assert ev.check(some_depth) is True
    assert len(ev._memo) == slots + 1, "the mean of the depth is no measure's: a new slot"
    assert Evaluation(ev.primitives, ev.cfg, reference=True).check(some_depth) is True
