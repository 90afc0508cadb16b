"""The demo's plain output (``--no-live``): lines for logs, pipes and CI.

A state change is printed the tick it happens, with the reasons and the fix
hints; between changes, one status line per pool every few seconds. The
state-change lines are what a reader (or a test) compares with
``qhealth classify TRACE --window ...`` on the recorded traces.
"""

from __future__ import annotations

import threading
from typing import TextIO

from qhealth import Listener, QueueSnapshot
from qhealth._text import finding_lines
from qhealth.conditions import SEVERITY

from ._text import number

#: Seconds between two status lines of a pool.
STATUS_EVERY_S = 5.0


def change_line(snapshot: QueueSnapshot, before: frozenset[str] = frozenset()) -> str:
    """``  17.5 s  naive      now rate_limited (rate_limited, boom_bust)``, and
    ``  21.5 s  naive      now rate_limited; boom_bust cleared`` when one of
    several conditions ends (the state alone would read as no change at all).
    ``before``: the conditions on at the previous change."""
    health = snapshot.health
    conditions = ", ".join(health.ordered_conditions)
    also = f" ({conditions})" if len(health.conditions) > 1 else ""
    now = {str(c) for c in health.conditions}
    gone = [str(c) for c in SEVERITY if str(c) in before and str(c) not in now]
    cleared = f"; {', '.join(gone)} cleared" if gone else ""
    return f"{snapshot.sample.t:7.1f} s  {snapshot.queue:<10} now {health.state}{also}{cleared}"


class LogView(Listener):
    """Prints each pool's state changes as they happen, and a status line every
    :data:`STATUS_EVERY_S` seconds."""

    def __init__(self, out: TextIO, every_s: float = STATUS_EVERY_S) -> None:
        self._out = out
        self._every = every_s
        self._lock = threading.Lock()
        self._state: dict[str, tuple[str, frozenset[str]]] = {}
        self._last_status: dict[str, QueueSnapshot] = {}

    def on_tick(self, snapshot: QueueSnapshot) -> None:
        queue, health, sample = snapshot.queue, snapshot.health, snapshot.sample
        lines: list[str] = []
        with self._lock:
            state = (health.state, frozenset(str(c) for c in health.conditions))
            previous = self._state.get(queue)
            if previous != state:
                self._state[queue] = state
                lines.append(change_line(snapshot, previous[1] if previous else frozenset()))
                lines += finding_lines(health, indent=11)
            last = self._last_status.get(queue)
            if last is None:
                self._last_status[queue] = snapshot
            elif sample.t - last.sample.t >= self._every - 1e-6:
                self._last_status[queue] = snapshot
                lines.append(_status_line(last, snapshot))
            if lines:
                self._out.write("\n".join(lines) + "\n")
                self._out.flush()


def _status_line(before: QueueSnapshot, now: QueueSnapshot) -> str:
    s, b = now.sample, before.sample
    rate: float | None = None
    if s.processed_total is not None and b.processed_total is not None and s.t > b.t:
        rate = (s.processed_total - b.processed_total) / (s.t - b.t)
    return (
        f"{s.t:7.1f} s  {now.queue:<10} depth {s.depth:>5,}  busy {number(s.busy)}/{number(s.workers)}"
        f"  {number(rate)} items/s  429s {number(s.rate_limited_total)}  {now.health.state}"
    )
