"""prometheus-client's multiprocess mode, with two real worker processes
writing to one directory and a scrape that merges them (the gunicorn / Celery
prefork set-up of the ``qhealth.prometheus`` docstring)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from qhealth.prometheus import MultiProcessExporter, mark_process_dead, multiprocess_registry

from .export_support import fake_monitor, families, labels, scrape, spec_rows
from .multiprocess_support import Worker


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[Path, Worker, Worker]]:
    a = Worker(tmp_path, workers=3, items=10, failed=1)
    b = Worker(tmp_path, workers=5, items=20, failed=2)
    try:
        yield tmp_path, a, b
    finally:
        a.exit()
        b.exit()


def test_two_processes_are_merged_into_one_scrape(two_workers: tuple[Path, Worker, Worker]) -> None:
    directory, _, _ = two_workers
    got = scrape(multiprocess_registry(directory))
    q = labels(queue="jobs")
    assert got[("qhealth_workers", q)] == 3 + 5
    assert got[("qhealth_queue_depth", q)] == 3 + 3
    assert got[("qhealth_items_enqueued_total", q)] == 13 + 23
    assert got[("qhealth_items_processed_total", labels(queue="jobs", outcome="success"))] == 9 + 18
    assert got[("qhealth_items_processed_total", labels(queue="jobs", outcome="error"))] == 1 + 2
    assert got[("qhealth_item_duration_seconds_count", q)] == 30
    assert got[("qhealth_polls_total", labels(queue="jobs", result="hit"))] == 2
    conditions = {dict(k[1])["condition"] for k in got if k[0] == "qhealth_condition"}
    assert conditions == {"stalled", "overflow", "rate_limited", "boom_bust", "idle"}


def test_the_merged_scrape_keeps_the_contract_names_and_types(
    two_workers: tuple[Path, Worker, Worker],
) -> None:
    directory, _, _ = two_workers
    expected = {r.prometheus: r.kind for r in spec_rows()}
    # Not known by these workers: capacity, oldest age, and the verdict's
    # numbers over a window that is not full yet.
    unknown = {
        "qhealth_queue_capacity",
        "qhealth_queue_oldest_age_seconds",
        "qhealth_idle_ratio",
        "qhealth_rate_limited_ratio",
        "qhealth_workers_recommended",
    }
    got = families(multiprocess_registry(directory))
    assert {k: v for k, v in expected.items() if k not in unknown} == {
        k: v for k, v in got.items() if k not in unknown
    }


def test_a_dead_process_leaves_the_gauges_but_its_counts_stay(
    two_workers: tuple[Path, Worker, Worker],
) -> None:
    directory, a, _ = two_workers
    a.exit()
    mark_process_dead(a.pid, directory)
    got = scrape(multiprocess_registry(directory))
    q = labels(queue="jobs")
    assert got[("qhealth_workers", q)] == 5
    assert got[("qhealth_items_enqueued_total", q)] == 13 + 23, "counters never go backwards"


def test_the_exporter_refuses_to_run_without_multiprocess_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monitor, _ = fake_monitor()
    with pytest.raises(ValueError, match="PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessExporter(monitor)


def test_the_exporter_refuses_when_prometheus_client_was_imported_too_early(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # This test process imported prometheus_client without the variable set.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monitor, _ = fake_monitor()
    with pytest.raises(ValueError, match="imported before"):
        MultiProcessExporter(monitor)


def test_the_scrape_side_names_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        multiprocess_registry(tmp_path / "nope")
