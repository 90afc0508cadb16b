"""Every example trace in shared/traces is classified as its labels say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qhealth import classify, read_trace

from .conftest import TRACES

TRACE_FILES = sorted(TRACES.glob("*.jsonl"))


def _labeled(path: Path) -> list[tuple[float, set[str], set[str]]]:
    """(t, expected, reported) for every labeled sample of a trace."""
    labels = json.loads(path.with_suffix("").with_suffix(".labels.json").read_text())
    trace = read_trace(path)
    verdicts = classify(trace.samples, trace.header.interval_s, capacity=trace.header.capacity)
    rows = []
    for sample, health in zip(trace.samples, verdicts, strict=True):
        for segment in labels["segments"]:
            if segment["t0"] <= sample.t < segment["t1"]:
                rows.append((sample.t, set(segment["conditions"]), {str(c) for c in health.conditions}))
    return rows


def test_the_example_traces_are_there() -> None:
    assert len(TRACE_FILES) >= 14, f"expected the 14 example traces in {TRACES}"


@pytest.mark.parametrize("path", TRACE_FILES, ids=lambda p: p.stem)
def test_trace_is_classified_as_labeled(path: Path) -> None:
    rows = _labeled(path)
    assert rows, "the trace has labeled samples"
    wrong = [(t, sorted(exp), sorted(got)) for t, exp, got in rows if exp != got]
    accuracy = 1 - len(wrong) / len(rows)
    assert accuracy >= 0.95, f"accuracy {accuracy:.3f}; first mistakes (t, expected, reported): {wrong[:5]}"


@pytest.mark.parametrize("path", TRACE_FILES, ids=lambda p: p.stem)
def test_no_condition_is_reported_inside_a_healthy_segment(path: Path) -> None:
    alarms = [(t, sorted(got)) for t, exp, got in _labeled(path) if not exp and got]
    assert not alarms, f"false alarms in a healthy segment: {alarms[:5]}"
