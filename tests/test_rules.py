"""The Prometheus rules in alerts/: generated, valid, complete, and tested with promtool."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from alerts import rules
from alerts.config import RulesConfig
from qhealth import SEVERITY, ClassifierConfig

from .conftest import ROOT

RULES_FILE = ROOT / "alerts" / "qhealth.rules.yml"
RULES_TEST = ROOT / "alerts" / "tests" / "qhealth.rules.test.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
ALERT_NAMES = {
    "QueueStalled",
    "QueueOverflow",
    "QueueRateLimitStorm",
    "QueueBoomBust",
    "QueuePersistentlyIdle",
}


def need_tool(name: str, package: str) -> str:
    """The path of a binary the test runs for real; a clear failure when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install -y {package} (.ci/run does this)")
    return path


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def _loaded() -> dict[str, object]:
    data = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _alerts() -> list[dict[str, object]]:
    return [r for g in _loaded()["groups"] for r in g["rules"] if "alert" in r]  # type: ignore[attr-defined]


def test_committed_rules_are_a_fresh_build() -> None:
    assert RULES_FILE.read_text(encoding="utf-8") == rules.render(rules.build()), (
        "alerts/qhealth.rules.yml is stale: run `python3 -m alerts`"
    )


def test_promtool_accepts_the_rules() -> None:
    result = run(need_tool("promtool", "prometheus"), "check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hand_written_promtool_tests_pass() -> None:
    """Each alert's `for:` boundary and exact annotations, on small synthetic queues."""
    result = run(need_tool("promtool", "prometheus"), "test", "rules", str(RULES_TEST))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_there_is_one_alert_per_condition_with_the_issue_names() -> None:
    alerts = _alerts()
    assert {a["alert"] for a in alerts} == ALERT_NAMES
    conditions = {re.search(r'condition="(\w+)"', str(a["expr"])).group(1) for a in alerts}  # type: ignore[union-attr]
    assert conditions == {str(c) for c in SEVERITY}


@pytest.mark.parametrize("name", sorted(ALERT_NAMES))
def test_alert_has_for_severity_and_annotations(name: str) -> None:
    alert = next(a for a in _alerts() if a["alert"] == name)
    assert alert["for"] not in (None, "0s")
    assert alert["labels"]["severity"] in {"critical", "warning", "info"}  # type: ignore[index]
    annotations = alert["annotations"]
    assert isinstance(annotations, dict)
    assert set(annotations) >= {"summary", "description", "runbook_url", "dashboard_url"}
    assert "$labels.queue" in annotations["summary"]
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


def test_aggregates_conditions_and_alerts_share_one_group() -> None:
    """Groups are evaluated in no fixed order: an alert reading a recorded series
    of another group would sometimes see the previous evaluation's value."""
    groups = _loaded()["groups"]
    assert isinstance(groups, list) and len(groups) == 1
    kinds = ["alert" if "alert" in r else "record" for r in groups[0]["rules"]]
    assert kinds == sorted(kinds, key=lambda k: k == "alert"), "every recording rule comes before the alerts"


def test_every_raw_series_is_aggregated_by_queue() -> None:
    for rule in _loaded()["groups"][0]["rules"]:  # type: ignore[index]
        if "record" in rule:
            assert rule["record"].startswith("queue:"), rule["record"]


def test_thresholds_come_from_the_classifier_settings() -> None:
    """One place: changing a classifier setting changes the rules."""
    default = rules.render(rules.build())
    stricter = rules.render(rules.build(RulesConfig(classifier=ClassifierConfig(idle_on=0.97))))
    assert "queue:qhealth_idle_ratio:window >= 0.9\n" in default
    assert "queue:qhealth_idle_ratio:window >= 0.97\n" in stricter


def test_a_longer_window_changes_every_range() -> None:
    """The window and its recent half (the classifier's clear_fraction) follow window_s."""
    text = rules.render(rules.build(RulesConfig(classifier=ClassifierConfig(window_s=120))))
    assert "increase(qhealth_attempts_total[2m])" in text
    assert "increase(qhealth_attempts_total[1m])" in text  # the recent half
    assert "[1m59s500ms:1s]" in text  # per-interval steps over the window
    assert "[39s:1s]" in text  # thirds of the window (growing backlog)


def test_a_selector_reaches_every_raw_series() -> None:
    text = rules.render(rules.build(RulesConfig(selector='job="billing"')))
    raw = re.findall(r"(?<![:\w])qhealth_[a-z_]+(?:\{[^}]*\})?", text)
    assert raw and all('job="billing"' in r for r in raw), [r for r in raw if "job" not in r][:3]


def test_an_unknown_template_placeholder_is_an_error() -> None:
    with pytest.raises(ValueError, match="measure_nope"):
        rules.render_template("{{ measure_nope }}", RulesConfig())


def test_bad_depth_aggregation_is_rejected() -> None:
    with pytest.raises(ValueError, match="depth_aggregation"):
        RulesConfig(depth_aggregation="avg")


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
