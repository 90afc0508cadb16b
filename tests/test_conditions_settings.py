"""docs/conditions.md's table of classifier settings is the one in the code."""

from __future__ import annotations

import re
from dataclasses import fields

from qhealth import ClassifierConfig

from .conftest import ROOT


def test_every_setting_and_its_default_is_in_the_conditions_page() -> None:
    text = (ROOT / "docs" / "conditions.md").read_text()
    rows = {}
    for line in text.splitlines():
        match = re.match(r"\| `(\w+)`(?: / `(\w+)`)? \| ([\d.]+)(?: / ([\d.]+))? \|", line)
        if match:
            names, values = match.group(1, 2), match.group(3, 4)
            for name, value in zip(names, values, strict=True):
                if name is not None:
                    rows[name] = float(value)
    defaults = ClassifierConfig()
    assert rows == {f.name: float(getattr(defaults, f.name)) for f in fields(defaults)}
