"""The Prometheus rules: compiled from the one definition, for any scrape interval, valid and complete."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from qhealth import ClassifierConfig
from qhealth._measures import MEASURES, SERIES
from qhealth.cli import main as cli
from qhealth.conditions import SEVERITY
from qhealth.rules import MONITOR_DOWN, Compiler, RulesConfig, build, render, render_template

from .conftest import ROOT
from .services import need_tool, run

RULES_FILE = ROOT / "alerts" / "qhealth.rules.yml"
RULES_TEST = ROOT / "alerts" / "tests" / "qhealth.rules.test.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
CONDITION_ALERTS = {
    "QueueStalled",
    "QueueOverflow",
    "QueueRateLimitStorm",
    "QueueBoomBust",
    "QueuePersistentlyIdle",
}
ALERT_NAMES = CONDITION_ALERTS | {MONITOR_DOWN}


def _loaded(text: str | None = None) -> dict[str, object]:
    data = yaml.safe_load(text if text is not None else RULES_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _rules(text: str | None = None) -> list[dict[str, object]]:
    return list(_loaded(text)["groups"][0]["rules"])  # type: ignore[index]


def _alerts() -> list[dict[str, object]]:
    return [r for r in _rules() if "alert" in r]


def test_committed_rules_are_a_fresh_build() -> None:
    assert RULES_FILE.read_text(encoding="utf-8") == render(build()), "run `python3 -m alerts`"


@pytest.mark.parametrize("interval", [1, 5, 15, 30, 60])
def test_promtool_accepts_the_rules_at_every_scrape_interval(interval: int, tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(render(build(RulesConfig(scrape_interval_s=interval))), encoding="utf-8")
    result = run(need_tool("promtool", "prometheus"), "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_hand_written_promtool_tests_pass() -> None:
    """Each alert's `for:` boundary and exact annotations, on small synthetic queues."""
    result = run(need_tool("promtool", "prometheus"), "test", "rules", str(RULES_TEST))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_every_sample_series_and_measure_of_the_definition_is_recorded() -> None:
    """One definition, two back ends: nothing the classifier measures is missing from the rules."""
    q = Compiler(RulesConfig())
    recorded = {r["record"] for r in _rules() if "record" in r}
    for series in SERIES:
        assert q.series_name(series) in recorded, series.name
    for measure in MEASURES:
        for part in measure.parts:
            assert q.measure_name(measure.name, part) in recorded, (measure.name, part)


def test_there_is_one_alert_per_condition_and_one_on_the_monitor_itself() -> None:
    alerts = _alerts()
    assert {a["alert"] for a in alerts} == ALERT_NAMES
    conditions = {
        m.group(1) for a in alerts if (m := re.search(r'condition="(\w+)"', str(a["expr"]))) is not None
    }
    assert conditions == {str(c) for c in SEVERITY}


def test_the_monitor_down_alert_reads_source_up_and_the_last_sample_time() -> None:
    (alert,) = [a for a in _alerts() if a["alert"] == MONITOR_DOWN]
    assert "qhealth_source_up" in str(alert["expr"])
    assert "qhealth_last_sample_timestamp_seconds" in str(alert["expr"])
    assert alert["labels"] == {"severity": "critical"}


@pytest.mark.parametrize("name", sorted(ALERT_NAMES))
def test_alert_has_for_severity_and_annotations(name: str) -> None:
    alert = next(a for a in _alerts() if a["alert"] == name)
    assert alert["for"] not in (None, "0s")
    assert alert["labels"]["severity"] in {"critical", "warning", "info"}  # type: ignore[index]
    annotations = alert["annotations"]
    assert isinstance(annotations, dict)
    assert set(annotations) >= {"summary", "description", "runbook_url", "dashboard_url"}
    assert "$labels.queue" in annotations["summary"]
    if name in CONDITION_ALERTS:
        assert "| query" in annotations["description"], "the description shows the numbers behind the alert"


@pytest.mark.parametrize("name", sorted(ALERT_NAMES))
def test_runbook_url_points_at_a_section_of_docs_runbooks(name: str) -> None:
    alert = next(a for a in _alerts() if a["alert"] == name)
    url = alert["annotations"]["runbook_url"]  # type: ignore[index]
    page, _, anchor = url.partition("#")
    assert page.endswith("docs/runbooks.md")
    headings = re.findall(r"^## (\S+)", RUNBOOKS.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert anchor in {h.lower() for h in headings}, f"no section '## {name}' in docs/runbooks.md"


def test_runbook_sections_say_what_it_means_how_to_confirm_and_how_to_fix() -> None:
    text = RUNBOOKS.read_text(encoding="utf-8")
    for name in ALERT_NAMES:
        section = text.split(f"## {name}", 1)[1].split("\n## ", 1)[0]
        for part in ("What it means", "Confirm it on the dashboard", "Fix it"):
            assert f"### {part}" in section, f"{name}: no '{part}' subsection"


def test_everything_is_one_group_evaluated_once_per_scrape() -> None:
    """Groups are evaluated in no fixed order: a rule reading a series recorded in another
    group would sometimes see the previous evaluation's value."""
    groups = _loaded(render(build(RulesConfig(scrape_interval_s=30))))["groups"]
    assert isinstance(groups, list) and len(groups) == 1
    assert groups[0]["interval"] == "30s"
    kinds = ["alert" if "alert" in r else "record" for r in groups[0]["rules"]]
    assert kinds == sorted(kinds, key=lambda k: k == "alert"), "every recording rule comes before the alerts"


def test_every_recorded_series_is_by_queue() -> None:
    for rule in _rules():
        if "record" in rule:
            assert str(rule["record"]).startswith("queue:"), rule["record"]


def test_thresholds_come_from_the_classifier_settings() -> None:
    """One place: changing a classifier setting changes the rules."""
    default = render(build())
    stricter = render(build(RulesConfig(classifier=ClassifierConfig(idle_on=0.97))))
    assert "(queue:qhealth_idle_ratio:window >= 0.9)" in default
    assert "(queue:qhealth_idle_ratio:window >= 0.97)" in stricter


@pytest.mark.parametrize(
    ("interval", "window", "recent"), [(15, "2m", "1m"), (30, "4m", "2m"), (5, "1m", "30s")]
)
def test_the_window_follows_the_scrape_interval(interval: int, window: str, recent: str) -> None:
    """At least 8 scrapes per window (the classifier's min_window_intervals), 60 s at the least."""
    text = render(build(RulesConfig(scrape_interval_s=interval)))
    assert f"increase(qhealth_attempts_total[{window}])" in text
    assert f"increase(qhealth_attempts_total[{recent}])" in text
    assert ":1s]" not in text, "no subquery at a fixed one-second step"


def test_sample_measures_take_the_last_samples_of_the_window() -> None:
    """S - I/2: the last S/I evaluations, whichever end of a range Prometheus includes."""
    text = render(build(RulesConfig(scrape_interval_s=30)))
    assert "sum_over_time(queue:qhealth_waiting:sample[3m45s])" in text


def test_a_selector_reaches_every_raw_series() -> None:
    exprs = " ".join(str(r["expr"]) for r in _rules(render(build(RulesConfig(selector='job="billing"')))))
    raw = re.findall(r"(?<![:\w])qhealth_[a-z_]+(?:\{[^}]*\})?", exprs)
    assert raw and all('job="billing"' in r for r in raw), [r for r in raw if "job" not in r][:3]


def test_an_unknown_template_placeholder_is_an_error() -> None:
    with pytest.raises(ValueError, match="measure_nope"):
        render_template("{{ measure_nope }}", RulesConfig())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth_aggregation": "avg"}, "depth_aggregation"),
        ({"scrape_interval_s": 0}, "scrape_interval_s"),
        ({"stale_after_s": -1}, "stale_after_s"),
    ],
)
def test_bad_rules_settings_are_rejected_by_name(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RulesConfig(**kwargs)  # type: ignore[arg-type]


def test_the_generator_check_mode_reports_a_stale_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import alerts.__main__ as main

    stale = tmp_path / "qhealth.rules.yml"
    stale.write_text("groups: []\n", encoding="utf-8")
    monkeypatch.setattr(main, "RULES_FILE", stale)
    assert main.main(["--check"]) == 1
    assert main.main([]) == 0
    assert main.main(["--check"]) == 0


def test_the_rules_command_writes_the_rules_for_a_scrape_interval(tmp_path: Path) -> None:
    out = tmp_path / "r.yml"
    assert cli(["rules", "--scrape-interval", "30s", "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == render(build(RulesConfig(scrape_interval_s=30)))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scrape-interval", "soon"], "--scrape-interval: not a duration"),
        (["--scrape-interval", "0s"], "between 1ms and 1d"),
        (["--set", "idle_on=2"], "idle_on"),
        (["--set", "nope=1"], "unknown classifier setting 'nope'"),
    ],
)
def test_the_rules_command_names_a_bad_option(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["rules", *args]) == 2
    assert message in capsys.readouterr().err
