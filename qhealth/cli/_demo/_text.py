"""Small text helpers shared by the demo's views: sparklines and numbers."""

from __future__ import annotations

from collections.abc import Sequence

_BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int = 30) -> str:
    """The last ``width`` values as block characters, scaled to their maximum
    (all zero: a flat line)."""
    shown = list(values)[-width:]
    if not shown:
        return ""
    top = max(shown)
    if top <= 0:
        return _BLOCKS[0] * len(shown)
    last = len(_BLOCKS) - 1
    return "".join(_BLOCKS[min(last, round(v / top * last))] for v in shown)


def number(value: float | None, digits: int = 1) -> str:
    """``1,234`` for an int, ``12.3`` for a float, ``-`` when unknown."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f}%"
