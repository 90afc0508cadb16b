"""A collector that is down, slow or answering errors never reaches the pool:
the pool keeps its pace, failures are logged once per interval (never per
item), and shutting down does not hang."""

from __future__ import annotations

import logging
import statistics
import time
from typing import Literal

import pytest

import qhealth
from qhealth.otel import setup_otlp

from .otel_support import (
    MODES,
    Chunk,
    SwitchableReceiver,
    dead_endpoint,
    paired_ratios,
    pool_throughput,
    pool_while_collector_flips,
)

Protocol = Literal["grpc", "http"]


def _table(chunks: list[Chunk]) -> str:
    return "\n".join(
        f"{c.mode:5}  wall {c.wall:>9,.0f}/s  own {c.own:>9,.0f}/s  cpu {c.cpu:>9,.0f}/s  "
        f"exports {c.exports}  failed {c.failures}  met {c.met}"
        for c in chunks
    )


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_dead_slow_or_failing_collector_does_not_slow_the_pool(protocol: Protocol) -> None:
    """One pool runs without a break while its collector is switched between
    live, dead, slow and failing (alternated, ABBA); each failure mode's
    stretches are compared with the live stretches of the same round.

    What is asserted, and why not "within 5%" here: on this shared 2-core
    machine other test processes run beside this one and the load average
    reaches 5-10, so wall-clock throughput swings by 2-3x between two live
    stretches and a 5% bound would fail at random. Two measures hold still:
    throughput per second of the pool thread's *own* time (wall time minus
    the time the kernel kept it waiting for a CPU: waiting for the GIL or
    blocking on a collector still counts) and per second of the process's
    CPU time. The test asserts what they resolve: the failures really
    happened; no mode blocks the pool (own-time median ratio >= 0.7: a pool
    that waited for a dead or slow collector would fall far below); no mode
    takes a real share of the CPU from it (CPU median ratio >= 0.7: a retry
    loop without backoff, or a log line per item, would halve it; a dead
    HTTP collector measured 0.79 once in a CI run under load, and 0.62 at a
    load average near 8, from four rounds of half-second stretches: six rounds
    now steady the median, and the bound sits below that noise). Exports
    run every 0.2 s, far more often than anyone would configure; each stretch
    is measured once the exporter has met the new mode (an export went through
    or failed), after which a failing collector is mostly backed off from, as
    it would be in production. ``bench/export.py`` measures the same over more
    rounds, for the figures in docs/benchmarks.md.
    """
    chunks = pool_while_collector_flips(
        protocol, MODES, rounds=6, chunk_items=120_000, settle_s=0.25, interval_s=0.2
    )
    table = _table(chunks)
    # (A live export may still time out now and then on a loaded machine: `met`
    # is the proof that the live collector answered during the stretch.)
    for c in chunks:
        assert c.met > 0, f"a {c.mode} stretch began before the exporter met its collector:\n{table}"
    for mode in ("dead", "slow", "error"):
        own = statistics.median(paired_ratios(chunks, mode, "own"))
        cpu = statistics.median(paired_ratios(chunks, mode, "cpu"))
        assert own >= 0.7, f"a {mode} collector held the pool up ({mode}/live {own:.2f}):\n{table}"
        assert cpu >= 0.7, f"a {mode} collector took CPU from the pool ({mode}/live {cpu:.2f}):\n{table}"


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_dead_collector_is_logged_once_per_interval_never_per_item(
    protocol: Protocol, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    monitor = qhealth.Monitor(interval=0.05)
    monitor.watch("warm-up", workers=1)
    monitor.start()
    export = setup_otlp(
        monitor,
        protocol="grpc" if protocol == "grpc" else "http/protobuf",
        endpoint=dead_endpoint(protocol),
        interval_s=0.05,
        timeout_s=0.3,
    )
    try:
        items = 0
        deadline = time.monotonic() + 20
        while export.failures < 5 and time.monotonic() < deadline:
            pool_throughput(monitor, f"pool-{items}", 20_000)
            items += 20_000
        assert export.failures >= 5, "the dead collector should have failed several exports by now"
    finally:
        monitor.stop()
        export.shutdown(timeout_s=2)
    ours = [r for r in caplog.records if r.name.startswith("qhealth")]
    theirs = [r for r in caplog.records if r.name.startswith("opentelemetry")]
    assert len(ours) == 1, [r.getMessage() for r in ours]
    assert "failed" in ours[0].getMessage()
    # The exporters log each retry and each failure; within one interval each
    # distinct message passes once, so a handful at most, whatever the number of exports.
    assert len(theirs) <= 3, [r.getMessage() for r in theirs]
    assert len({(r.name, r.msg) for r in theirs}) == len(theirs), "a message passed twice in one interval"


def test_the_exporter_log_filters_are_removed_at_shutdown() -> None:
    export = setup_otlp(endpoint=dead_endpoint("http"), interval_s=60)
    logger = logging.getLogger("opentelemetry.exporter.otlp.proto.http.metric_exporter")
    assert logger.filters, "throttled while the export runs"
    export.shutdown(timeout_s=1)
    assert not [f for f in logger.filters if type(f).__name__ == "_ThrottleFilter"]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_shutting_down_with_a_dead_collector_takes_at_most_the_export_timeout(protocol: Protocol) -> None:
    monitor = qhealth.Monitor(interval=0.05)
    monitor.watch("q", workers=1)
    monitor.start()
    export = setup_otlp(
        monitor,
        protocol="grpc" if protocol == "grpc" else "http/protobuf",
        endpoint=dead_endpoint(protocol),
        interval_s=0.05,
        timeout_s=0.5,
    )
    time.sleep(0.3)
    monitor.stop()
    t0 = time.monotonic()
    export.shutdown(timeout_s=5)
    assert time.monotonic() - t0 < 2.0


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_exports_back_off_while_the_collector_is_down_and_resume_when_it_is_back(protocol: Protocol) -> None:
    receiver = SwitchableReceiver(protocol)  # starts dead: nothing listens
    monitor = qhealth.Monitor(interval=0.05)
    monitor.watch("q", workers=1)
    monitor.start()
    export = setup_otlp(
        monitor,
        protocol="grpc" if protocol == "grpc" else "http/protobuf",
        endpoint=receiver.endpoint,
        interval_s=0.05,
        timeout_s=0.3,
    )
    try:
        deadline = time.monotonic() + 20
        while export.failures < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert export.failures >= 6
        # Attempts after 1, 2, 4, 8, 8, ... intervals: most intervals are skipped.
        assert export.skipped > export.failures, (export.skipped, export.failures)
        receiver.switch("live")
        successes = export.successes
        deadline = time.monotonic() + 20 * 0.05 + 5  # at most 8 intervals, and the export's own time
        while export.successes == successes and time.monotonic() < deadline:
            time.sleep(0.05)
        assert export.successes > successes, "exports did not resume when the collector came back"
    finally:
        monitor.stop()
        export.shutdown(timeout_s=2)
        receiver.close()
