"""The probe: hot-path counters, idle-time accounting, threads and event loops."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from qhealth import Monitor, Probe
from qhealth._probe import MAX_OBSERVATIONS_PER_TICK

from .clocks import FakeClock


def test_counters_count_items_calls_and_polls() -> None:
    probe = Probe("q", timed=False)
    probe.enqueued(3)
    probe.started()
    probe.succeeded()
    probe.started()
    probe.failed()
    probe.attempted(4)
    probe.rate_limited()
    probe.polled(hit=True)
    probe.polled(hit=False)
    probe.polled(hit=False)
    assert (probe.enqueued_total, probe.processed_total, probe.failed_total) == (3, 2, 1)
    assert (probe.attempts_total, probe.rate_limited_total, probe.busy) == (4, 1, 0)
    assert (probe.polls_hit_total, probe.polls_empty_total) == (1, 2)


def test_a_timed_probe_integrates_idle_workers_from_busy_idle_transitions() -> None:
    clock = FakeClock()
    probe = Probe("q", clock=clock)
    start = clock()
    probe.worker_started()
    probe.worker_started()  # two workers, both idle
    clock.advance(10)  # 20 idle worker-seconds
    probe.started()  # one busy
    clock.advance(5)  # +5 (one idle)
    probe.succeeded()
    clock.advance(1)  # +2
    assert probe.idle_seconds() == pytest.approx(27.0)
    assert probe.idle_seconds(start + 20) == pytest.approx(35.0), "open spans count up to `now`"


def test_an_untimed_probe_counts_idle_only_inside_reported_waits() -> None:
    clock = FakeClock()
    probe = Probe("q", timed=False, clock=clock)
    probe.worker_started()
    probe.started()
    clock.advance(5)  # busy: not idle
    probe.succeeded()
    probe.idle_begin()
    clock.advance(2)
    probe.idle_end()
    clock.advance(3)  # between items without blocking: not idle
    assert probe.idle_seconds() == pytest.approx(2.0)
    assert probe.idle_known


def test_idle_time_is_unknown_until_a_worker_or_a_wait_is_reported() -> None:
    probe = Probe("q")
    probe.started()
    probe.succeeded()
    assert not probe.idle_known


def test_processing_context_counts_success_failure_and_duration() -> None:
    clock = FakeClock()
    probe = Probe("q", clock=clock)
    with probe.processing():
        clock.advance(0.5)
    with pytest.raises(RuntimeError), probe.processing():
        raise RuntimeError("boom")
    assert (probe.processed_total, probe.failed_total, probe.busy) == (2, 1, 0)
    durations, waits = probe.drain_observations()
    assert durations == [0.5, 0.0] and waits == []
    assert probe.drain_observations() == ([], []), "draining hands the observations over once"


def test_latency_observations_are_bounded_between_ticks() -> None:
    probe = Probe("q")
    for _ in range(MAX_OBSERVATIONS_PER_TICK + 10):
        probe.observe_duration(0.1)
        probe.observe_wait(0.2)
    durations, waits = probe.drain_observations()
    assert len(durations) == len(waits) == MAX_OBSERVATIONS_PER_TICK
    assert probe.observations_dropped == 20


def test_each_thread_gets_its_own_probe_and_the_monitor_sums_them() -> None:
    clock = FakeClock()
    monitor = Monitor(clock=clock)
    main_probe = monitor.watch("q")
    per_thread = 20_000

    threads: set[int] = set()

    def work() -> Probe:
        threads.add(threading.get_ident())
        probe = main_probe.local()
        for _ in range(per_thread):
            probe.enqueued()
            probe.started()
            probe.succeeded()
        return probe

    with ThreadPoolExecutor(max_workers=4) as pool:
        probes = list(pool.map(lambda _: work(), range(8)))
    assert len({id(p) for p in probes}) == len(threads), "one probe per thread"
    assert main_probe not in probes
    assert main_probe.local() is main_probe
    clock.advance(1)
    snapshot = monitor.tick()["q"]
    assert snapshot.sample.processed_total == 8 * per_thread
    assert snapshot.sample.enqueued_total == 8 * per_thread
    assert snapshot.sample.busy == 0


def test_items_that_start_in_one_thread_and_end_in_another_still_add_up() -> None:
    clock = FakeClock()
    monitor = Monitor(clock=clock)
    probe = monitor.watch("q", workers=2)
    probe.started()
    probe.started()
    done = threading.Thread(target=lambda: (probe.local().succeeded(), probe.local().failed()))
    done.start()
    done.join()
    clock.advance(1)
    sample = monitor.tick()["q"].sample
    assert (sample.busy, sample.processed_total, sample.failed_total, sample.workers) == (0, 2, 1, 2)


def test_a_probe_outlives_event_loops_and_serves_one_loop_per_thread() -> None:
    clock = FakeClock()
    monitor = Monitor(clock=clock)
    probe = monitor.watch("q")

    async def produce(p: Probe, n: int) -> None:
        for _ in range(n):
            p.enqueued()
            await asyncio.sleep(0)

    asyncio.run(produce(probe, 100))
    asyncio.run(produce(probe, 100))  # a second loop on the same thread
    threads = [threading.Thread(target=lambda: asyncio.run(produce(probe.local(), 1000))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    clock.advance(1)
    assert monitor.tick()["q"].sample.enqueued_total == 3200


def test_a_probe_made_directly_is_its_own_local_probe() -> None:
    probe = Probe("q")
    assert probe.local() is probe


@pytest.mark.slow
def test_probes_of_finished_threads_fold_into_a_total_and_are_dropped() -> None:
    """20,000 short-lived threads once left 20,001 probes, a 12.8 ms tick and +8 MB:
    a finished thread's counts now fold into a retired total, its probe is dropped,
    and nothing it counted is lost."""
    import tracemalloc

    clock = FakeClock()
    monitor = Monitor(clock=clock)
    source_probe = monitor.watch("churn", workers=1)

    def one_item() -> None:
        probe = source_probe.local()
        probe.enqueued()
        probe.started()
        probe.succeeded()
        probe.observe_duration(0.01)

    def churn(count: int) -> None:
        for _ in range(count // 100):
            threads = [threading.Thread(target=one_item) for _ in range(100)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            clock.advance(1)
            monitor.tick()  # as the ticker would, between the batches

    churn(2_000)  # warm up: caches, the window
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    churn(20_000)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    snapshot = monitor.snapshot("churn")
    assert snapshot is not None
    assert snapshot.sample.processed_total == 22_000 and snapshot.sample.enqueued_total == 22_000
    assert snapshot.sample.busy == 0 and snapshot.sample.workers == 1
    source = monitor._queues["churn"].source
    assert source.probe_count <= 2, "the main thread's probe (and at most one thread not yet folded)"
    assert grown < 1_000_000, f"memory grew {grown:,} bytes over 20,000 threads"
