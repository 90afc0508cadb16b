"""Findings as plain text: the one way every command prints a verdict's reasons.

``qhealth classify``, ``watch``, ``serve`` and the demo's log view all show a
condition's reason and its fix the same way::

    boom_bust: workers sat idle while items waited for 29% of worker-time; ...
               fix: workers poll on a fixed interval: block on the queue, or add jitter
"""

from __future__ import annotations

from ._classifier import Health


def finding_lines(health: Health, indent: int = 0) -> list[str]:
    """Two lines per active condition (reason, then fix), indented by ``indent``."""
    pad = " " * indent
    lines = []
    for finding in health.findings:
        lines.append(f"{pad}{finding.condition}: {finding.reason}")
        lines.append(f"{pad}{' ' * len(finding.condition)}  fix: {finding.hint}")
    return lines
