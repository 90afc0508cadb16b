"""Probe.returned(): an item handed back unprocessed (used by src_pool's shutdown and broker retries)."""

from __future__ import annotations

from qhealth import Probe


def test_returned_frees_the_worker_without_counting_the_item_processed() -> None:
    probe = Probe("q", timed=False)
    probe.enqueued()
    probe.started()
    probe.returned()
    assert probe.busy == 0
    assert probe.processed_total == 0
    assert probe.failed_total == 0


def test_returned_reopens_the_idle_span_of_a_timed_probe() -> None:
    now = [0.0]
    probe = Probe("q", timed=True, clock=lambda: now[0])
    probe.worker_started()
    now[0] = 1.0
    probe.started()  # idle for 1 s, then busy
    now[0] = 3.0
    probe.returned()  # busy for 2 s, idle again from here
    now[0] = 4.0
    assert probe.idle_seconds() == 2.0
