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


class State(StrEnum):
    """A verdict's one-word summary: ``healthy``, ``warming_up`` (the window
    does not yet reach back far enough to judge), or the most severe active
    condition. A string enum: it compares equal to its name."""

    HEALTHY = "healthy"
    WARMING_UP = "warming_up"
    STALLED = "stalled"
    OVERFLOW = "overflow"
    RATE_LIMITED = "rate_limited"
    BOOM_BUST = "boom_bust"
    IDLE = "idle"


HEALTHY = State.HEALTHY
WARMING_UP = State.WARMING_UP


def state_of(conditions: Iterable[Condition]) -> State:
    """``healthy``, or the most severe of the active conditions."""
    active = set(conditions)
    for condition in SEVERITY:
        if condition in active:
            return State(condition.value)
    return State.HEALTHY
