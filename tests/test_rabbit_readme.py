"""The README's "On RabbitMQ" example runs against the local RabbitMQ and prints what the README says."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

from src_pool.rabbit_broker import RabbitBroker
from tests.integration_brokers import amqp_url, unique

__all__ = ["amqp_url"]  # fixtures used by this module

ROOT = Path(__file__).resolve().parent.parent
SECTION = "### On RabbitMQ"
README_URL = "amqp://guest:guest@127.0.0.1:5672/"


def _section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert SECTION in readme, f"the README has no section {SECTION!r}"
    start = readme.index(SECTION) + len(SECTION)
    ends = [i for i in (readme.find("\n## ", start), readme.find("\n### ", start)) if i > 0]
    return readme[start : min(ends) if ends else None]


def test_the_readme_rabbitmq_example_runs_and_prints_its_counts(amqp_url: str) -> None:
    section = _section()
    code = re.search(r"```python\n(.*?)```", section, re.S)
    shown = re.search(r"```text\n(.*?)```", section, re.S)
    assert code and shown, "the section has a python example and its output"
    assert README_URL in code.group(1) and '"emails"' in code.group(1)
    queue = unique("readme-emails")  # the README's queue name, made unique for this run
    program = code.group(1).replace('"emails"', f'"{queue}"')
    try:
        result = subprocess.run(
            [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
        )
    finally:
        asyncio.run(RabbitBroker(amqp_url, queue).delete())
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == shown.group(1).splitlines()
