"""The README's "Run the reference pool" example runs and prints what the README says."""

from __future__ import annotations

import re
import subprocess
import sys

from .conftest import ROOT

SECTION = "## Run the reference pool"


def _section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert SECTION in readme, f"the README has no section {SECTION!r}"
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + len(SECTION))
    return readme[start : end if end > 0 else None]


def test_the_readme_example_runs_the_reference_pool_and_prints_its_counts() -> None:
    section = _section()
    code = re.search(r"```python\n(.*?)```", section, re.S)
    shown = re.search(r"```text\n(.*?)```", section, re.S)
    assert code and shown, "the section has a python example and its output"
    result = subprocess.run(
        [sys.executable, "-c", code.group(1)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == shown.group(1).splitlines()
