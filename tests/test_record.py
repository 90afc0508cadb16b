"""Recording what a monitor sees gives traces that read back and classify."""

from __future__ import annotations

from pathlib import Path

import pytest

from qhealth import Monitor, TraceRecorder, classify, read_trace
from qhealth._record import trace_filename

from .clocks import FakeClock


def test_a_recording_reads_back_as_the_samples_the_monitor_took(tmp_path: Path) -> None:
    clock = FakeClock()
    monitor = Monitor(clock=clock)
    recorder = TraceRecorder(tmp_path)
    monitor.add_listener(recorder)
    monitor.watch("emails", depth=lambda: 0, capacity=50, workers=3)
    taken = []
    for _ in range(70):
        clock.advance(1)
        taken.append(monitor.tick()["emails"])
    recorder.close()
    trace = read_trace(tmp_path / "emails.jsonl")
    assert trace.header.capacity == 50 and trace.header.interval_s == 1.0
    assert trace.samples == [s.sample for s in taken]
    offline = classify(trace.samples, 1.0, capacity=50)
    assert [h.conditions for h in offline] == [s.health.conditions for s in taken]


def test_a_recording_stops_at_its_bound(tmp_path: Path) -> None:
    clock = FakeClock()
    monitor = Monitor(clock=clock)
    monitor.add_listener(TraceRecorder(tmp_path, max_samples=5))
    monitor.watch("q", depth=lambda: 0)
    for _ in range(10):
        clock.advance(1)
        monitor.tick()
    assert len(read_trace(tmp_path / "q.jsonl").samples) == 5


@pytest.mark.parametrize(
    ("queue", "name"),
    [
        ("emails", "emails.jsonl"),
        ("../../etc/passwd", "_.._etc_passwd.jsonl"),
        ("a b/c", "a_b_c.jsonl"),
        ("...", "queue.jsonl"),
    ],
)
def test_queue_names_cannot_escape_the_folder(queue: str, name: str) -> None:
    assert trace_filename(queue) == name
