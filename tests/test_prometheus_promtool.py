"""``promtool check metrics`` passes on a full scrape: no duplicate families,
HELP on every metric, base units, counter names ending in _total."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from qhealth.prometheus import encode, register

from .export_support import busy_monitor, spec_rows
from .multiprocess_support import Worker


def promtool_check(text: bytes) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: install it with `apt-get install prometheus` (.ci/run does)")
    return subprocess.run(
        [binary, "check", "metrics"],
        input=text.decode(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_full_scrape_passes_promtool() -> None:
    registry = CollectorRegistry()
    monitor, _ = busy_monitor()
    register(monitor, registry)
    text = generate_latest(registry)
    assert all(f"# HELP {r.prometheus.removesuffix('_total')}".encode() in text for r in spec_rows())
    result = promtool_check(text)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result


def test_the_served_scrape_passes_promtool() -> None:
    """What /metrics serves: qhealth's families from their prepared lines.
    (promtool reads the Prometheus text format only: the OpenMetrics body is
    checked against prometheus-client's own encoder instead.)"""
    registry = CollectorRegistry()
    monitor, _ = busy_monitor()
    register(monitor, registry)
    body, _ = encode(registry)
    result = promtool_check(body)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result


def test_a_scrape_of_the_default_registry_with_qhealth_in_it_passes_promtool() -> None:
    monitor, _ = busy_monitor()
    collector = register(monitor)
    try:
        result = promtool_check(generate_latest(REGISTRY))
    finally:
        REGISTRY.unregister(collector)
        collector.close()
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result


def test_a_merged_multiprocess_scrape_passes_promtool(tmp_path: Path) -> None:
    from qhealth.prometheus import multiprocess_registry

    workers = [Worker(tmp_path, workers=2, items=5, failed=1), Worker(tmp_path, workers=3, items=7, failed=0)]
    try:
        result = promtool_check(generate_latest(multiprocess_registry(tmp_path)))
    finally:
        for w in workers:
            w.exit()
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result


def test_promtool_does_flag_a_bad_scrape() -> None:
    """The check above can fail: a counter without _total and a metric without HELP."""
    bad = b"# TYPE qhealth_bad counter\nqhealth_bad 1\nqhealth_nohelp 2\n"
    assert promtool_check(bad).returncode != 0
