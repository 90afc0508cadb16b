"""A real Prometheus (the Debian ``prometheus`` binary) scrapes a qhealth
endpoint every second; what its HTTP API answers is what the monitor saw,
including a condition turning on."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import qhealth
from qhealth._http import HttpServer
from qhealth.prometheus import serve
from tests.services import free_port, wait_ready

QUEUE = "e2e-orders"


class Prometheus:
    """A throwaway Prometheus server scraping one target every second."""

    def __init__(self, target: str, directory: Path) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail(
                "the prometheus binary is missing: install it with `apt-get install prometheus` "
                "(.ci/run does)"
            )
        self.port = free_port()
        config = directory / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: qhealth\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.log = (directory / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_ready(
            f"http://127.0.0.1:{self.port}/-/ready", self.proc, directory / "prometheus.log", "Prometheus"
        )

    def query(self, expr: str) -> dict[frozenset[tuple[str, str]], float]:
        """{labels: value} of an instant query."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return {
            frozenset((k, v) for k, v in item["metric"].items() if k not in ("job", "instance")): float(
                item["value"][1]
            )
            for item in body["data"]["result"]
        }

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        assert len(result) <= 1, f"{expr} matched several series: {result}"
        return next(iter(result.values()), None)

    def wait_for(self, expr: str, expected: float, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        last: float | None = None
        while time.monotonic() < deadline:
            last = self.value(expr)
            if last == expected:
                return
            time.sleep(0.25)
        pytest.fail(f"prometheus never showed {expr} == {expected} (last: {last})")

    def samples_since(self, selector: str, since: float) -> list[float]:
        """Every raw sample Prometheus stored for a one-series selector since
        ``since`` (Unix time), oldest first."""
        seconds = int(time.time() - since) + 2
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": f"{selector}[{seconds}s]"}
        )
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.load(r)
        (series,) = body["data"]["result"]
        return [float(v) for _, v in series["values"]]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Pool:
    """Four workers kept busy by a thread, two items always waiting, until
    :meth:`freeze`; then nothing moves: items wait and none is processed."""

    def __init__(self, monitor: qhealth.Monitor) -> None:
        self.probe = monitor.watch(QUEUE, workers=4)
        self._stop = threading.Event()
        self.probe.enqueued(2)
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        p = self.probe.local()
        n = 0
        while not self._stop.is_set():
            p.enqueued(4)
            for _ in range(4):
                p.started()
            p.attempted(5)
            time.sleep(0.01)
            for i in range(4):
                p.failed() if (n + i) % 10 == 0 else p.succeeded()
            n += 4

    @property
    def frozen(self) -> bool:
        return self._stop.is_set()

    def freeze(self) -> None:
        self._stop.set()
        self._thread.join()
        self.probe.enqueued(3)  # arrive, and nobody will take them


@pytest.fixture
def monitored(tmp_path: Path) -> Iterator[tuple[qhealth.Monitor, Pool, HttpServer, Prometheus]]:
    monitor = qhealth.Monitor(interval=0.25, config=qhealth.ClassifierConfig(window_s=2.0))
    pool = Pool(monitor)
    monitor.start()
    server = serve(monitor, listen="127.0.0.1:0", registry=CollectorRegistry())
    host, port = server.address
    prometheus = Prometheus(f"{host}:{port}", tmp_path)
    try:
        yield monitor, pool, server, prometheus
    finally:
        if not pool.frozen:
            pool.freeze()
        prometheus.close()
        server.close()
        monitor.stop()


@pytest.mark.slow
def test_prometheus_stores_what_the_monitor_saw_and_a_condition_turning_on(
    monitored: tuple[qhealth.Monitor, Pool, HttpServer, Prometheus],
) -> None:
    monitor, pool, _, prometheus = monitored
    started = time.time()
    q = f'queue="{QUEUE}"'

    # While the pool works, Prometheus sees it healthy: the stalled series is there, at 0.
    prometheus.wait_for(f'qhealth_condition{{{q},condition="stalled"}}', 0.0)
    assert prometheus.value('up{job="qhealth"}') == 1.0
    pool.freeze()
    time.sleep(2 * monitor.interval)  # a tick or two after the last item
    frozen = monitor.snapshot(QUEUE)
    assert frozen is not None
    s = frozen.sample
    assert s.enqueued_total and s.processed_total and s.failed_total, "the pool really worked"

    # Once the frozen values are scraped, every one of them is what the monitor saw.
    prometheus.wait_for(f"qhealth_items_enqueued_total{{{q}}}", float(s.enqueued_total))
    assert prometheus.value(f"qhealth_queue_depth{{{q}}}") == s.depth == 5
    assert prometheus.value(f"qhealth_workers{{{q}}}") == s.workers == 4
    assert prometheus.value(f"qhealth_workers_busy{{{q}}}") == s.busy == 0
    success = prometheus.value(f'qhealth_items_processed_total{{{q},outcome="success"}}')
    assert success == s.processed_total - s.failed_total
    assert prometheus.value(f'qhealth_items_processed_total{{{q},outcome="error"}}') == s.failed_total
    assert prometheus.value(f"qhealth_attempts_total{{{q}}}") == s.attempts_total
    assert prometheus.value(f"qhealth_rate_limited_total{{{q}}}") == s.rate_limited_total == 0
    idle = prometheus.value(f"qhealth_worker_idle_seconds_total{{{q}}}")
    latest = monitor.snapshot(QUEUE)
    assert latest is not None and latest.sample.idle_s_total is not None and idle is not None
    assert frozen.sample.idle_s_total is not None
    # Idle time keeps growing while the workers wait: what was scraped lies between.
    assert 0 < idle <= latest.sample.idle_s_total
    conditions = prometheus.query(f"qhealth_condition{{{q}}}")
    assert {dict(k)["condition"] for k in conditions} == {
        "stalled",
        "overflow",
        "rate_limited",
        "boom_bust",
        "idle",
    }

    # Nothing is processed for a whole window while items wait: stalled turns on,
    # in the monitor and then in Prometheus.
    prometheus.wait_for(f'qhealth_condition{{{q},condition="stalled"}}', 1.0)
    health = monitor.health(QUEUE)
    assert health is not None and qhealth.Condition.STALLED in health.conditions
    history = prometheus.samples_since(f'qhealth_condition{{{q},condition="stalled"}}', started)
    assert history[0] == 0.0 and history[-1] == 1.0 and history == sorted(history), history
