"""Reading the examples of the README and the docs pages, so that tests can run them as written.

Two conventions are in use: a section whose first ```python block is a
program and whose first ```text block is what it prints (:func:`example`), and
a fenced block right after a ``<!-- readme-test: NAME -->`` marker
(:func:`snippet`). Each helper reads ``README.md`` unless given another
``page`` (a path from the project's root, such as ``docs/instrument.md``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def read_page(page: str = "README.md") -> str:
    """The text of a page of the project: ``README.md``, or a path such as ``docs/export.md``."""
    return (ROOT / page).read_text(encoding="utf-8")


def section(title: str, page: str = "README.md") -> str:
    """The text under a ``## `` or ``### `` heading, up to the next heading."""
    text = read_page(page)
    heading = f"\n{title}\n"
    if text.count(heading) != 1:
        pytest.fail(f"{page} must hold exactly one section {title!r}")
    start = text.index(heading) + len(heading) - 1
    ends = [i for i in (text.find("\n## ", start), text.find("\n### ", start)) if i > 0]
    return text[start : min(ends) if ends else None]


def example(title: str, page: str = "README.md") -> tuple[str, str]:
    """A section's program and the output the page shows for it."""
    text = section(title, page)
    code = re.search(r"```python\n(.*?)```", text, re.S)
    shown = re.search(r"```text\n(.*?)```", text, re.S)
    if not (code and shown):
        pytest.fail(f"{page} section {title!r} needs a ```python example and its ```text output")
    return code.group(1), shown.group(1)


def run_example(program: str, timeout: float = 60) -> list[str]:
    """Run a program in a fresh interpreter (from the project's root); its output lines."""
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def snippet(name: str, page: str = "README.md") -> str:
    """The fenced block that follows ``<!-- readme-test: NAME -->`` in the README
    (or in another page of the project, such as ``docs/autoscaling.md``)."""
    marker = f"<!-- readme-test: {name} -->\n"
    text = read_page(page)
    if text.count(marker) != 1:
        pytest.fail(f"{page} must hold exactly one {marker.strip()}")
    block = text.split(marker, 1)[1]
    if not block.startswith("```"):
        pytest.fail(f"{marker.strip()} must be followed by a fenced block")
    return block.split("\n", 1)[1].split("\n```", 1)[0] + "\n"
