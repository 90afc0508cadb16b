"""What ``qhealth watch`` prints: a line per tick, findings when a state changes,
and one line a minute about queues it cannot read.

One queue gets a line of numbers per tick (or a JSON object per tick with
``--format jsonl``). Many queues get one summary line per tick, plus a line for
each queue whose state changed (at most :data:`SHOWN_CHANGES` a tick), since
10,000 lines a second would be noise; ``--format jsonl`` still writes every
queue's object.

A queue that cannot be read (the broker went away, a key of the wrong type, a
group deleted) is marked down by the monitor, which calls
:meth:`WatchOutput.on_source_down` at every tick. This prints one line on
standard error at once, then at most one a minute while anything stays down,
with the reason and the broker's password masked; and one line when the
queues read again. Never a traceback: the reason is one line.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, TextIO

from .._classifier import HEALTHY, SEVERITY, WARMING_UP, Health
from .._monitor import Listener, QueueSnapshot
from .._text import finding_lines

#: Seconds between two lines about queues that stay down.
DOWN_EVERY_S = 60.0
#: Queues named in a line about many (the rest are counted).
SHOWN_QUEUES = 3
#: State changes printed per tick when many queues are watched.
SHOWN_CHANGES = 20


def shown(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) and not value.is_integer() else f"{value:.0f}"


def as_json(snapshot: QueueSnapshot) -> dict[str, Any]:
    health: Health = snapshot.health
    return {
        "queue": snapshot.queue,
        **snapshot.sample.to_dict(),
        "oldest_age_s": snapshot.oldest_age_s,
        "state": health.state,
        "conditions": [str(c) for c in SEVERITY if c in health.conditions],
        "not_judged": {str(c): why for c, why in health.not_judged.items()},
    }


def _names(queues: list[str]) -> str:
    text = ", ".join(repr(q) for q in queues[:SHOWN_QUEUES])
    return text + (f" and {len(queues) - SHOWN_QUEUES} more" if len(queues) > SHOWN_QUEUES else "")


@dataclass(eq=False)
class WatchOutput(Listener):
    """Prints a watch (see the module docstring).

    ``why_down(queue)`` says why a queue could not be read; ``consumers(queue)``
    gives a stream group's consumers for display; ``watched()`` counts the
    queues under watch. ``where`` names the broker (its URL, masked).
    """

    out: TextIO
    err: TextIO
    _: KW_ONLY
    fmt: str
    kind: str
    where: str
    many: bool
    why_down: Callable[[str], str]
    watched: Callable[[], int]
    consumers: Callable[[str], Any] = lambda queue: None
    clock: Callable[[], float] = time.monotonic
    down_every_s: float = DOWN_EVERY_S
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _last_state: dict[str, str] = field(default_factory=dict, init=False)
    _down_since: dict[str, float] = field(default_factory=dict, init=False)
    _next_down_line: float = field(default=float("-inf"), init=False)
    _round: dict[str, QueueSnapshot] = field(default_factory=dict, init=False)
    _round_down: set[str] = field(default_factory=set, init=False)
    _round_back: list[tuple[str, float]] = field(default_factory=list, init=False)
    _said_not_judged: bool = field(default=False, init=False)

    # -- the monitor's calls --------------------------------------------------

    def on_tick(self, snapshot: QueueSnapshot) -> None:
        with self._lock:
            self._start_round_if_seen(snapshot.queue)
            since = self._down_since.pop(snapshot.queue, None)
            if since is not None:
                self._round_back.append((snapshot.queue, self.clock() - since))
            self._round[snapshot.queue] = snapshot
            if self.fmt == "jsonl":
                self.out.write(json.dumps(as_json(snapshot), separators=(",", ":")) + "\n")
            elif not self.many:
                self._write_line(snapshot)
            self._end_round_if_complete()

    def on_source_down(self, snapshot: QueueSnapshot) -> None:
        with self._lock:
            self._start_round_if_seen(snapshot.queue)
            self._down_since.setdefault(snapshot.queue, self.clock())
            self._round[snapshot.queue] = snapshot
            self._round_down.add(snapshot.queue)
            self._end_round_if_complete()

    def on_unwatch(self, queue: str) -> None:
        with self._lock:
            self._last_state.pop(queue, None)
            self._down_since.pop(queue, None)

    # -- rounds: one tick over every queue -----------------------------------

    def _start_round_if_seen(self, queue: str) -> None:
        if queue in self._round:
            self._end_round()

    def _end_round_if_complete(self) -> None:
        if len(self._round) >= self.watched():
            self._end_round()

    def _end_round(self) -> None:
        if self._round_back:
            self._write_back()
        if self._round_down:
            self._write_down()
        if self.many and self.fmt == "text":
            self._write_summary()
        self.out.flush()
        self.err.flush()
        self._round, self._round_down, self._round_back = {}, set(), []

    # -- lines -----------------------------------------------------------------

    def _write_down(self) -> None:
        now = self.clock()
        if now < self._next_down_line:
            return
        self._next_down_line = now + self.down_every_s
        down = sorted(self._round_down)
        longest = max(now - self._down_since.get(q, now) for q in down)
        reasons = Counter(self.why_down(q) for q in down)
        if len(reasons) == 1:
            (why,) = reasons
            what = (
                f"{self.kind} queue {down[0]!r}"
                if len(down) == 1
                else f"{len(down)} {self.kind} queues ({_names(down)})"
            )
            line = f"cannot read {what} at {self.where}: {why}"
        else:
            parts = "; ".join(
                f"{_names([q for q in down if self.why_down(q) == why])}: {why}"
                for why, _ in reasons.most_common(SHOWN_QUEUES)
            )
            line = f"cannot read {len(down)} {self.kind} queues at {self.where}: {parts}"
        self.err.write(
            f"qhealth watch: {line} (down {longest:.0f} s; its metrics are withdrawn until it reads again; "
            f"this line repeats every {self.down_every_s:g} s while it lasts)\n"
        )

    def _write_back(self) -> None:
        back = sorted(q for q, _ in self._round_back)
        longest = max(s for _, s in self._round_back)
        what = f"{self.kind} queue {back[0]!r}" if len(back) == 1 else f"{len(back)} {self.kind} queues"
        self.err.write(f"qhealth watch: reading {what} again, after {longest:.0f} s down\n")
        if not self._down_since:
            self._next_down_line = float("-inf")  # a new outage is reported at once

    def _write_line(self, snapshot: QueueSnapshot) -> None:
        s, health = snapshot.sample, snapshot.health
        line = (
            f"{s.t:8.1f}  depth {shown(s.depth):>6}  workers {shown(s.workers):>3}  busy {shown(s.busy):>3}"
            f"  processed {shown(s.processed_total):>7}  failed {shown(s.failed_total):>6}"
        )
        if snapshot.oldest_age_s is not None:
            line += f"  oldest {snapshot.oldest_age_s:.1f}s"
        line += f"  {health.state}"
        consumers = self.consumers(snapshot.queue)
        if isinstance(consumers, list) and consumers:
            line += "  idle ms: " + ", ".join(f"{name}={idle}" for name, _, idle in consumers[:8])
        self.out.write(line + "\n")
        self._write_findings(snapshot, indent=10)

    def _write_findings(self, snapshot: QueueSnapshot, indent: int) -> bool:
        """The findings of a queue whose state changed; whether it changed."""
        health = snapshot.health
        last = self._last_state.get(snapshot.queue)
        if health.state == last:
            return False
        self._last_state[snapshot.queue] = health.state
        pad = " " * indent
        for text in finding_lines(health, indent=indent):
            self.out.write(text + "\n")
        first_verdict = last in (None, WARMING_UP) and health.state != WARMING_UP
        if first_verdict and not (self.many and self._said_not_judged):
            self._said_not_judged = True  # with many queues of one kind, the reasons are the same: once
            for condition, why in health.not_judged.items():
                self.out.write(f"{pad}not judged: {condition}: {why}\n")
        return True

    def _write_summary(self) -> None:
        read = [s for q, s in self._round.items() if q not in self._round_down]
        if not read:
            return
        t = max(s.sample.t for s in read)
        depth = sum(s.sample.depth for s in read)
        states = Counter(s.health.state for s in read)
        unwell = {k: v for k, v in states.items() if k not in (HEALTHY, WARMING_UP)}
        line = f"{t:8.1f}  {len(read)} queues  depth {depth}"
        if self._round_down:
            line += f"  not read {len(self._round_down)}"
        line += "  " + (
            ", ".join(f"{state} {n}" for state, n in sorted(unwell.items(), key=lambda kv: -kv[1]))
            if unwell
            else (WARMING_UP if states.get(WARMING_UP) == len(read) else "all healthy")
        )
        self.out.write(line + "\n")
        changed = 0
        for snapshot in sorted(read, key=lambda s: s.queue):
            state, last = snapshot.health.state, self._last_state.get(snapshot.queue)
            if state == last:
                continue
            if last is None and state == WARMING_UP:
                self._last_state[snapshot.queue] = state  # every queue starts so: not news
                continue
            changed += 1
            if changed <= SHOWN_CHANGES:
                self.out.write(f"          {snapshot.queue!r}: now {state}\n")
                self._write_findings(snapshot, indent=12)
            else:
                self._last_state[snapshot.queue] = snapshot.health.state
        if changed > SHOWN_CHANGES:
            self.out.write(f"          ... and {changed - SHOWN_CHANGES} more queues changed state\n")
