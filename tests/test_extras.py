"""A missing optional dependency says, in one line, which extra installs it, and
that extra exists and holds the dependency (issue 16, item 12).

Each command runs in a fresh interpreter in which the package cannot be
imported (``sys.modules[name] = None``), as if the extra were not installed.
"""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

from qhealth.rules import RulesConfig, build, render

from .conftest import ROOT, TRACES
from .fresh_python import run_python


def _extras() -> dict[str, list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    return extras


def _without(module: str, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (with ``sys.argv[1:] = args``) where ``module`` cannot be imported."""
    return run_python(code, *args, without=module)


def test_the_dashboards_without_grafanalib_say_what_to_install_in_one_line() -> None:
    result = _without("grafanalib", "import runpy; runpy.run_module('dashboards', run_name='__main__')")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "needs grafanalib" in lines[0] and ".[dashboards]" in lines[0]
    assert any(dep.startswith("grafanalib") for dep in _extras()["dashboards"])


def test_trace_to_promtool_with_a_rules_file_and_no_pyyaml_names_the_promtool_extra(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(render(build(RulesConfig(scrape_interval_s=1))), encoding="utf-8")
    result = _without(
        "yaml",
        "from qhealth.cli import main; sys.exit(main(sys.argv[1:]))",
        "trace-to-promtool",
        str(TRACES / "idle-polling.jsonl"),
        "--rules",
        str(rules),
        "-o",
        str(tmp_path / "test.yml"),
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "needs PyYAML: pip install 'qhealth[promtool]'" in result.stderr
    assert not (tmp_path / "test.yml").exists()
    assert any(dep.lower().startswith("pyyaml") for dep in _extras()["promtool"])


def test_all_installs_every_extra_that_shares_one_environment() -> None:
    extras = _extras()
    (everything,) = extras["all"]
    named = set(everything.split("[", 1)[1].rstrip("]").split(","))
    # arq pins redis<6 while Celery's transport needs redis>=6.4: it has its own environment.
    assert named == set(extras) - {"all", "dev", "arq"}
