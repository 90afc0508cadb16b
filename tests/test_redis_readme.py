"""The README's "On Redis" example runs, on a throwaway redis-server, and prints what the README says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.redis_server import RedisServer, redis_server

__all__ = ["redis_server"]  # fixtures used by this module

ROOT = Path(__file__).resolve().parent.parent
SECTION = "### On Redis"
README_URL = "redis://127.0.0.1:6379/0"


def _section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert SECTION in readme, f"the README has no section {SECTION!r}"
    start = readme.index(SECTION) + len(SECTION)
    ends = [i for i in (readme.find("\n## ", start), readme.find("\n### ", start)) if i > 0]
    return readme[start : min(ends) if ends else None]


def test_the_readme_redis_example_runs_and_prints_its_counts(redis_server: RedisServer) -> None:
    section = _section()
    code = re.search(r"```python\n(.*?)```", section, re.S)
    shown = re.search(r"```text\n(.*?)```", section, re.S)
    assert code and shown, "the section has a python example and its output"
    assert README_URL in code.group(1)
    program = code.group(1).replace(README_URL, redis_server.url)
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == shown.group(1).splitlines()
