"""Recorded traces replayed through the ordinary monitor: judged, exported and shown as live queues."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import qhealth
from qhealth.prometheus import register
from qhealth.replay import TraceSource, replay_monitor

from .clocks import FakeClock
from .export_support import labels, scrape


def _trace(shared_traces: Path, name: str) -> qhealth.Trace:
    return qhealth.read_trace(shared_traces / f"{name}.jsonl")


def test_a_trace_source_reads_one_sample_per_read_then_nothing(shared_traces: Path) -> None:
    trace = _trace(shared_traces, "healthy-batch")
    source = TraceSource(trace)
    readings = [source.read() for _ in trace.samples]
    assert [r.depth for r in readings if r is not None] == [s.depth for s in trace.samples]
    assert source.ended and source.read() is None, "an ended trace has no fresh sample"


def test_a_looping_trace_carries_its_counters_on_upwards(shared_traces: Path) -> None:
    trace = _trace(shared_traces, "healthy-batch")
    first, last = trace.samples[0], trace.samples[-1]
    source = TraceSource(trace, loop=True)
    for _ in trace.samples:
        source.read()
    again = source.read()
    assert again is not None and not source.ended
    assert again.processed_total == last.processed_total
    assert again.idle_s_total == pytest.approx(last.idle_s_total + first.idle_s_total - first.idle_s_total)


def test_the_monitor_judges_a_replay_as_classify_judges_the_trace(shared_traces: Path) -> None:
    trace = _trace(shared_traces, "transition-429-storm")
    expected = qhealth.classify(trace.samples, trace.header.interval_s, capacity=trace.header.capacity)
    clock = FakeClock()
    replay = replay_monitor([trace], speed=10.0, clock=clock)
    assert replay.tick_s == trace.header.interval_s / 10
    got = []
    for _ in trace.samples:
        clock.now += replay.tick_s
        got.append(replay.monitor.tick()["event-archive"].health)
    assert [h.conditions for h in got] == [h.conditions for h in expected]
    assert replay.ended


def test_traces_of_different_intervals_are_each_read_at_their_own(shared_traces: Path) -> None:
    fast, slow = _trace(shared_traces, "healthy-bursty"), _trace(shared_traces, "healthy-batch")
    clock = FakeClock()
    replay = replay_monitor([fast, slow], clock=clock)
    assert replay.tick_s == 1.0
    reads: dict[str, int] = {"ledger-post": 0, slow.header.queue: 0}
    for _ in range(20):
        clock.now += 1.0
        for queue in replay.monitor.tick():
            reads[queue] = reads.get(queue, 0) + 1
    assert reads[slow.header.queue] == 4, "a 5 s trace read every fifth one-second tick"


def test_an_ended_trace_is_reported_down_not_served_as_current(shared_traces: Path) -> None:
    trace = _trace(shared_traces, "idle-blocking")
    clock = FakeClock()
    replay = replay_monitor([trace], clock=clock)
    registry = CollectorRegistry()
    register(replay.monitor, registry)
    for _ in trace.samples:
        clock.now += replay.tick_s
        replay.monitor.tick()
    got = scrape(registry)
    queue = trace.header.queue
    assert got[("qhealth_condition", labels(queue=queue, condition="idle"))] == 1.0
    assert got[("qhealth_workers", labels(queue=queue))] == trace.samples[-1].workers
    clock.now += replay.tick_s
    replay.monitor.tick()
    after = scrape(registry)
    assert after[("qhealth_source_up", labels(queue=queue))] == 0
    assert ("qhealth_workers", labels(queue=queue)) not in after


def test_two_traces_with_one_queue_name_are_refused(shared_traces: Path) -> None:
    trace = _trace(shared_traces, "idle-blocking")
    with pytest.raises(ValueError, match="same queue name"):
        replay_monitor([trace, trace])


def test_a_bad_speed_is_refused(shared_traces: Path) -> None:
    with pytest.raises(ValueError, match="speed"):
        replay_monitor([_trace(shared_traces, "idle-blocking")], speed=0)
