"""Findings as plain text: the one way every command prints a verdict's reasons.

``qhealth classify``, ``watch``, ``serve`` and the demo's log view all show a
condition's reason and its fix the same way::

    boom_bust: workers sat idle while items waited for 29% of worker-time; ...
               fix: workers poll on a fixed interval: block on the queue, or add jitter
"""

from __future__ import annotations

import unicodedata

from ._classifier import Health


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: control characters (ANSI escapes,
    carriage returns, line feeds, bidirectional overrides) shown as escapes.
    A queue name comes from a trace file or a broker key: data from outside."""
    if text.isprintable():
        return text
    return "".join(
        ch
        if ch.isprintable() and unicodedata.category(ch) != "Cf"
        else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


def finding_lines(health: Health, indent: int = 0) -> list[str]:
    """Two lines per active condition (reason, then fix), indented by ``indent``."""
    pad = " " * indent
    lines = []
    for finding in health.findings:
        lines.append(f"{pad}{finding.condition}: {finding.reason}")
        lines.append(f"{pad}{' ' * len(finding.condition)}  fix: {finding.hint}")
    return lines
