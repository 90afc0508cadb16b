"""Traces as promtool tests: the series, the expectations from labels and from the classifier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from qhealth import Sample, Trace, TraceHeader, read_trace
from qhealth.cli import main
from qhealth.rules import RulesConfig, build, dump, duration, parse_duration, render
from qhealth.rules.promtool import (
    AlertTiming,
    PromtoolError,
    Segment,
    alert_timings,
    alerts_from_rules,
    build_agreement_test,
    build_test,
    input_series,
    on_grid,
    read_labels,
    resample,
)

from .conftest import TRACES


def _trace(samples: list[Sample], interval: float = 1.0, capacity: int | None = None) -> Trace:
    return Trace(TraceHeader("q", interval, capacity), samples)


def _sample(t: float, **fields: float | None) -> Sample:
    base: dict[str, float | None] = {
        "depth": 0,
        "workers": 2,
        "busy": 1,
        "enqueued_total": 10,
        "processed_total": 10,
        "failed_total": 1,
        "attempts_total": 12,
        "rate_limited_total": 2,
        "idle_s_total": 5.5,
    }
    base.update(fields)
    return Sample(t=t, **base)  # type: ignore[arg-type]


@pytest.fixture
def rules_1s(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yml"
    path.write_text(render(build(RulesConfig(scrape_interval_s=1))), encoding="utf-8")
    return path


# -- series -----------------------------------------------------------------------------


def test_counters_and_gauges_become_contract_series() -> None:
    series = {s["series"]: s["values"] for s in input_series(_trace([_sample(0), _sample(1, depth=3)]))}
    assert series['qhealth_queue_depth{queue="q"}'] == "0 3"
    assert series['qhealth_items_processed_total{outcome="success",queue="q"}'] == "9 9"
    assert series['qhealth_items_processed_total{outcome="error",queue="q"}'] == "1 1"
    assert series['qhealth_worker_idle_seconds_total{queue="q"}'] == "5.5 5.5"
    assert not any(name.startswith("qhealth_queue_capacity") for name in series), "unbounded: no capacity"


def test_a_bounded_queue_has_a_capacity_series() -> None:
    series = {s["series"]: s["values"] for s in input_series(_trace([_sample(0), _sample(1)], capacity=50))}
    assert series['qhealth_queue_capacity{queue="q"}'] == "50 50"


def test_null_fields_become_missing_samples_and_never_known_fields_no_series() -> None:
    samples = [_sample(0, busy=None, idle_s_total=None), _sample(1, idle_s_total=None)]
    series = {s["series"]: s["values"] for s in input_series(_trace(samples))}
    assert series['qhealth_workers_busy{queue="q"}'] == "_ 1"
    assert 'qhealth_worker_idle_seconds_total{queue="q"}' not in series


def test_a_missing_sample_on_the_grid_is_a_gap() -> None:
    series = {
        s["series"]: s["values"] for s in input_series(_trace([_sample(0), _sample(5.0, depth=2)], 2.5))
    }
    assert series['qhealth_queue_depth{queue="q"}'] == "0 _ 2"


def test_a_sample_off_the_sampling_grid_is_an_error() -> None:
    with pytest.raises(PromtoolError, match=r"t=1\.5 is off the 1 s sampling grid"):
        input_series(_trace([_sample(0), _sample(1.5)]))


def test_two_samples_in_one_interval_are_an_error() -> None:
    with pytest.raises(PromtoolError, match="same 1 s interval"):
        input_series(_trace([_sample(0.9), _sample(1.1)]))


def test_on_grid_moves_jittered_samples_to_their_slots() -> None:
    gridded = on_grid(_trace([_sample(0.1), _sample(0.95), _sample(2.2)]))
    assert [s.t for s in gridded.samples] == [0.0, 1.0, 2.0]


def test_resample_keeps_every_kth_sample_and_moves_the_labels_by_the_longer_window() -> None:
    trace = _trace([_sample(float(t), depth=t) for t in range(10)])
    coarse, segments = resample(
        trace, 3, [Segment(2, 9, frozenset({"idle"})), Segment(9, 10, frozenset())], window_shift_s=4
    )
    assert coarse.header.interval_s == 3
    assert [s.depth for s in coarse.samples] == [0, 3, 6, 9]
    assert segments == [Segment(6, 9, frozenset({"idle"}))], "a segment shorter than the shift is dropped"


# -- expectations from labels ------------------------------------------------------------


def test_expectations_come_from_the_labels() -> None:
    trace = _trace([_sample(float(t)) for t in range(10)])
    segments = [Segment(2, 4, frozenset({"idle"})), Segment(6, 8, frozenset())]
    alert = AlertTiming("QueuePersistentlyIdle", "idle", for_s=1, keep_firing_for_s=1)
    checks = build_test(trace, segments, ["r.yml"], [alert])["tests"][0]["promql_expr_test"]
    verdicts = {c["eval_time"]: c["exp_samples"] for c in checks if c["expr"].startswith("queue:")}
    assert verdicts["2s"] == [
        {"labels": 'queue:qhealth_condition:active{condition="idle",queue="q"}', "value": 1}
    ]
    assert verdicts["6s"] == []
    assert sorted(verdicts) == ["2s", "3s", "6s", "7s"]
    alerts = {c["eval_time"]: c["exp_samples"] for c in checks if "ALERTS" in c["expr"]}
    # pending at 2s (for: 1s); gone from 7s on (keep_firing_for: 1s after the healthy segment began)
    assert sorted(alerts) == ["3s", "7s"]
    assert alerts["3s"][0]["labels"] == '{alertname="QueuePersistentlyIdle",alertstate="firing",queue="q"}'
    assert alerts["7s"] == []


def test_every_labeled_sample_of_an_example_is_checked() -> None:
    path = TRACES / "transition-poll-bug.jsonl"
    trace = read_trace(path)
    segments = read_labels(path.with_name("transition-poll-bug.labels.json"))
    test = build_test(trace, segments, ["r.yml"])["tests"][0]
    checks = [c for c in test["promql_expr_test"] if c["expr"] == "queue:qhealth_condition:active"]
    labeled = [s for s in trace.samples if any(g.t0 <= s.t < g.t1 for g in segments)]
    assert len(checks) == len(labeled)
    assert any(not c["exp_samples"] for c in checks) and any(c["exp_samples"] for c in checks)


def test_every_thins_the_checks_but_not_the_series() -> None:
    trace = _trace([_sample(float(t)) for t in range(10)])
    test = build_test(trace, [Segment(0, 10, frozenset())], ["r.yml"], every=5)["tests"][0]
    assert [c["eval_time"] for c in test["promql_expr_test"]] == ["0s", "5s"]
    assert len(test["input_series"][0]["values"].split()) == 10


def test_no_labeled_sample_is_an_error() -> None:
    with pytest.raises(PromtoolError, match="no sample falls inside a labeled segment"):
        build_test(_trace([_sample(0)]), [Segment(50, 60, frozenset())], ["r.yml"])


def test_alert_timings_come_from_the_rules_config_or_a_rules_file(rules_1s: Path) -> None:
    from_config = {a.name: a for a in alert_timings(RulesConfig())}
    from_file = {a.name: a for a in alerts_from_rules(rules_1s)}
    assert from_config == from_file
    assert from_file["QueueBoomBust"] == AlertTiming("QueueBoomBust", "boom_bust", 300.0, 60.0)


def test_bad_labels_are_reported_with_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.labels.json"
    bad.write_text(json.dumps({"segments": [{"t0": 0, "t1": 5, "conditions": ["sad"]}]}))
    with pytest.raises(PromtoolError, match=r"x\.labels\.json: segment 0 has unknown conditions \['sad'\]"):
        read_labels(bad)


# -- expectations from the classifier --------------------------------------------------------


def test_the_agreement_test_checks_every_measure_and_the_conditions() -> None:
    trace = read_trace(TRACES / "boom-bust-slow-poll.jsonl")
    cfg = RulesConfig(scrape_interval_s=trace.header.interval_s)
    checks = build_agreement_test(trace, ["r.yml"], cfg, every=50)["tests"][0]["promql_expr_test"]
    exprs = " ".join(c["expr"] for c in checks)
    assert "queue:qhealth_idle_capacity_share:window" in exprs and "queue:qhealth_busy_excess:recent" in exprs
    verdicts = [c for c in checks if c["expr"] == "queue:qhealth_condition:active"]
    assert verdicts and any('condition="boom_bust"' in str(c["exp_samples"]) for c in verdicts)


def test_the_agreement_test_needs_rules_for_the_trace_interval() -> None:
    trace = read_trace(TRACES / "boom-bust-slow-poll.jsonl")
    with pytest.raises(PromtoolError, match="15 s scrape interval, the trace is sampled every 5 s"):
        build_agreement_test(trace, ["r.yml"], RulesConfig())


# -- the files ---------------------------------------------------------------------------------


def test_durations_round_trip() -> None:
    for seconds in (0, 0.5, 1, 59.5, 60, 90, 300, 3600, 5400.25):
        assert parse_duration(duration(seconds)) == seconds
    assert duration(90) == "1m30s"
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        parse_duration("5 minutes")


def test_the_yaml_reads_back_as_the_same_test_and_rules() -> None:
    trace = _trace([_sample(float(t)) for t in range(3)])
    test = build_test(trace, [Segment(0, 3, frozenset({"stalled"}))], ["../r.yml"])
    assert yaml.safe_load(dump(test)) == test
    rules = build()
    assert yaml.safe_load(render(rules)) == rules


# -- the command -------------------------------------------------------------------------------


def _convert(trace_path: Path, rules_file: Path, out: Path) -> Path:
    status = main(["trace-to-promtool", str(trace_path), "--rules", str(rules_file), "-o", str(out)])
    assert status == 0
    return out


def test_the_command_writes_rule_files_relative_to_the_test(tmp_path: Path, rules_1s: Path) -> None:
    (tmp_path / "sub").mkdir()
    out = _convert(TRACES / "idle-polling.jsonl", rules_1s, tmp_path / "sub" / "t.yml")
    loaded = yaml.safe_load(out.read_text())
    assert (out.parent / loaded["rule_files"][0]).resolve() == rules_1s.resolve()


def test_the_command_needs_a_labels_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rules_1s: Path
) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text((TRACES / "idle-polling.jsonl").read_text())
    assert main(["trace-to-promtool", str(trace), "--rules", str(rules_1s)]) == 2
    assert "t.labels.json: no labels file (pass --labels FILE)" in capsys.readouterr().err


def test_the_command_reports_a_bad_trace_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rules_1s: Path
) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"format":"qhealth-trace","version":1,"queue":"q","interval_s":1}\n{"t":0}\n')
    labels = TRACES / "idle-polling.labels.json"
    assert main(["trace-to-promtool", str(trace), "--rules", str(rules_1s), "--labels", str(labels)]) == 2
    assert 't.jsonl:2: missing key "depth"' in capsys.readouterr().err
