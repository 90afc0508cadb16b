"""What the monitor's tick costs per queue: sample, window, classify, for 1,000 and 10,000 queues.

Each queue is read from a source that replays an example trace (a boom-bust pool
sampled every second, so every condition's measures are exercised), and the monitor
ticks once a second of its fake clock: no sleeping, only the tick is timed. Beside
it, the same tick with each verdict recomputed from the whole window (the reference
the running sums are checked against in the tests), for scale.

    python3 bench/monitor.py [--queues 1000 10000] [--ticks 30]

Prints a table, then ``monitor KB per queue: X`` (tracemalloc, the window full) and,
last, ``monitor tick us per queue: X`` (running sums, the larger queue count).
"""

from __future__ import annotations

import argparse
import gc
import os
import time
import tracemalloc
from pathlib import Path

from qhealth import Monitor, Reading, read_trace
from qhealth._classifier import Classifier, judge

TRACE = Path(__file__).resolve().parent.parent.parent / "shared" / "traces" / "boom-bust-poisson.jsonl"


class Replayed:
    """A source that hands out a trace's readings over and over (shared by every queue)."""

    def __init__(self, readings: list[Reading], offset: int) -> None:
        self._readings = readings
        self._next = offset % len(readings)

    @property
    def unknown(self) -> dict[str, str]:
        return {}

    def read(self) -> Reading:
        reading = self._readings[self._next]
        self._next = (self._next + 1) % len(self._readings)
        return reading


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _readings() -> list[Reading]:
    trace = read_trace(TRACE)
    fields = ("depth", "workers", "busy", "enqueued_total", "processed_total", "failed_total")
    fields += ("attempts_total", "rate_limited_total", "idle_s_total")
    return [Reading(**{f: getattr(s, f) for f in fields}) for s in trace.samples]


def build(queues: int, readings: list[Reading]) -> tuple[Monitor, FakeClock]:
    clock = FakeClock()
    monitor = Monitor(clock=clock)
    for q in range(queues):
        monitor.watch_source(f"q{q}", Replayed(readings, offset=q * 7))
    return monitor, clock


def warm(monitor: Monitor, clock: FakeClock, ticks: int) -> None:
    for _ in range(ticks):
        clock.now += 1.0
        monitor.tick()


def time_ticks(monitor: Monitor, clock: FakeClock, ticks: int) -> float:
    """Seconds of CPU per tick (process time: the machine is shared)."""
    gc.collect()
    started = time.process_time()
    for _ in range(ticks):
        clock.now += 1.0
        monitor.tick()
    return (time.process_time() - started) / ticks


def recompute_us(readings: list[Reading], ticks: int) -> float:
    """One queue judged by recomputing every measure from the window at each tick."""
    classifier = Classifier(1.0)
    plain_window = classifier.window
    samples = [r.at(float(t)) for t, r in enumerate(readings[: 61 + ticks], start=1)]
    for sample in samples[:61]:
        classifier.update(sample)
    from qhealth._window import Window

    window = Window(plain_window.span_s, 200)
    for sample in samples[:61]:
        window.append(sample)
    started = time.process_time()
    for sample in samples[61:]:
        window.append(sample)
        judge(window, frozenset(), interval_s=1.0)
    return (time.process_time() - started) / ticks * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queues", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--ticks", type=int, default=20)
    args = parser.parse_args()
    readings = _readings()
    print(f"load average {os.getloadavg()[0]:.1f}; {TRACE.name} replayed per queue, window 60 s at 1 s")
    print(f"{'queues':>8} {'tick ms':>9} {'us/queue':>9} {'KB/queue':>9}")
    per_queue_us = kb = 0.0
    for queues in args.queues:
        tracemalloc.start()
        monitor, clock = build(queues, readings)
        warm(monitor, clock, 65)  # the window full, every condition judged
        kb = tracemalloc.get_traced_memory()[0] / queues / 1024
        tracemalloc.stop()
        per_tick = time_ticks(monitor, clock, args.ticks)
        per_queue_us = per_tick / queues * 1e6
        print(f"{queues:>8,} {per_tick * 1e3:>9.1f} {per_queue_us:>9.1f} {kb:>9.1f}")
    recompute = recompute_us(readings, 200)
    print(f"\nfor scale, one queue judged by recomputing the window at each tick: {recompute:.0f} us")
    print(f"monitor KB per queue: {kb:.1f}")
    print(f"monitor tick us per queue: {per_queue_us:.1f}")


if __name__ == "__main__":
    main()
