"""The five conditions of ``shared/spec/trace-format.md`` and how a verdict is named."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Condition(StrEnum):
    """The conditions of ``shared/spec/trace-format.md``."""

    STALLED = "stalled"
    OVERFLOW = "overflow"
    RATE_LIMITED = "rate_limited"
    BOOM_BUST = "boom_bust"
    IDLE = "idle"


#: Most severe first: the order that picks a verdict's ``state``.
SEVERITY: tuple[Condition, ...] = (
    Condition.STALLED,
    Condition.OVERFLOW,
    Condition.RATE_LIMITED,
    Condition.BOOM_BUST,
    Condition.IDLE,
)

HEALTHY = "healthy"
WARMING_UP = "warming_up"


def state_of(conditions: Iterable[Condition]) -> str:
    """``healthy``, or the most severe of the active conditions."""
    active = set(conditions)
    for condition in SEVERITY:
        if condition in active:
            return str(condition)
    return HEALTHY
