"""``qhealth serve``: recorded traces replayed as live metrics and conditions,
or prometheus-client multiprocess files merged, on a loopback /metrics."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import qhealth
from qhealth.cli import main
from qhealth.cli.serve import DEFAULT_LISTEN, Replay
from qhealth.prometheus import register
from tests.services import free_port

from .export_support import FakeClock, labels, scrape
from .multiprocess_support import Worker


def _trace(shared_traces: Path, name: str) -> qhealth.Trace:
    return qhealth.read_trace(shared_traces / f"{name}.jsonl")


def test_replay_plays_samples_as_time_passes_times_the_speed(shared_traces: Path) -> None:
    trace = _trace(shared_traces, "transition-429-storm")
    clock = FakeClock()
    replay = Replay([trace], speed=10.0, clock=clock)
    replay.advance()
    assert replay.snapshots()["event-archive"].sample.t == 0.0
    clock.now = 3.0  # 30 s of trace time at speed 10
    replay.advance()
    assert replay.snapshots()["event-archive"].sample == trace.samples[6]  # t = 30 at 5 s intervals


def test_replay_judges_every_sample_as_classify_does(shared_traces: Path) -> None:
    trace = _trace(shared_traces, "transition-429-storm")
    expected = qhealth.classify(trace.samples, trace.header.interval_s, capacity=trace.header.capacity)
    clock = FakeClock()
    seen: list[qhealth.Health] = []
    replay = Replay([trace], clock=clock, on_change=lambda snap, prev: seen.append(snap.health))
    for health in expected:
        clock.now = health.t
        replay.advance()
        assert replay.snapshots()["event-archive"].health.conditions == health.conditions
    assert [h.state for h in seen] == [
        h.state
        for i, h in enumerate(expected)
        if i == 0 or expected[i - 1].state != h.state or expected[i - 1].conditions != h.conditions
    ]
    assert replay.finished


def test_a_looping_replay_carries_time_and_counters_on_upwards(shared_traces: Path) -> None:
    trace = _trace(shared_traces, "healthy-batch")
    first, last = trace.samples[0], trace.samples[-1]
    span = last.t - first.t + trace.header.interval_s
    clock = FakeClock()
    replay = Replay([trace], loop=True, clock=clock)
    clock.now = span + 0.001  # the first sample of the second play-through
    replay.advance()
    snap = replay.snapshots()[trace.header.queue]
    assert snap.sample.t == pytest.approx(span)
    assert snap.sample.processed_total == last.processed_total
    assert snap.sample.idle_s_total == pytest.approx(last.idle_s_total)
    assert not replay.finished


def test_a_replay_is_a_source_the_prometheus_collector_reads(shared_traces: Path) -> None:
    trace = _trace(shared_traces, "idle-blocking")
    clock = FakeClock()
    replay = Replay([trace], clock=clock)
    registry = CollectorRegistry()
    register(replay, registry)
    clock.now = trace.samples[-1].t
    replay.advance()
    got = scrape(registry)
    assert got[("qhealth_condition", labels(queue=trace.header.queue, condition="idle"))] == 1.0
    assert got[("qhealth_workers", labels(queue=trace.header.queue))] == trace.samples[-1].workers
    assert not [k for k in got if "seconds_bucket" in k[0]], "a trace has no latencies: no histograms"


def test_two_traces_with_one_queue_name_are_refused(shared_traces: Path) -> None:
    trace = _trace(shared_traces, "idle-blocking")
    with pytest.raises(ValueError, match="same queue name"):
        Replay([trace, trace])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give trace files"),
        (["x.jsonl", "--multiprocess-dir", "."], "one of the two"),
        (["nope.jsonl"], "nope.jsonl"),
        (["--listen", ":9808", "x.jsonl"], "--listen"),
        (["--multiprocess-dir", "/nonexistent/dir"], "not a directory"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_it(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_bad_speed_is_refused(shared_traces: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", str(shared_traces / "idle-blocking.jsonl"), "--speed", "0"]) == 2
    assert "speed" in capsys.readouterr().err


def test_it_listens_on_loopback_unless_told_otherwise() -> None:
    assert DEFAULT_LISTEN.startswith("127.0.0.1:")


# -- the command, end to end ----------------------------------------------------------------


class Served:
    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qhealth", "serve", *args, "--listen", f"127.0.0.1:{self.port}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        if not first.startswith("serving "):
            self.proc.kill()
            pytest.fail(f"qhealth serve did not start: {first}{self.proc.communicate()[1]}")
        self.banner = first

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=10)
        return self.proc.returncode, out


@pytest.fixture
def storm(shared_traces: Path) -> Iterator[Served]:
    served = Served(str(shared_traces / "transition-429-storm.jsonl"), "--speed", "200")
    try:
        yield served
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.communicate()


def test_serve_replays_a_429_storm_until_rate_limited_shows_on_metrics(storm: Served) -> None:
    assert f"127.0.0.1:{storm.port}/metrics" in storm.banner
    key = ("qhealth_condition", labels(queue="event-archive", condition="rate_limited"))
    deadline = time.monotonic() + 20
    while storm.scrape().get(key) != 1.0:
        assert time.monotonic() < deadline, "rate_limited never turned on"
        time.sleep(0.1)
    status, out = storm.stop()
    assert status == 0
    assert "rate_limited: " in out and "fix: " in out, "the change was printed with its reason and fix"


def test_serve_merges_multiprocess_files(tmp_path: Path) -> None:
    workers = [Worker(tmp_path, workers=2, items=4, failed=0), Worker(tmp_path, workers=3, items=6, failed=1)]
    served = Served("--multiprocess-dir", str(tmp_path))
    try:
        got = served.scrape()
        assert got[("qhealth_workers", labels(queue="jobs"))] == 5
        assert got[("qhealth_items_processed_total", labels(queue="jobs", outcome="error"))] == 1
    finally:
        assert served.stop()[0] == 0
        for w in workers:
            w.exit()
