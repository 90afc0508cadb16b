"""End to end: a real Prometheus, loaded with the generated rules, scrapes a real
instrumented worker pool whose workers poll in step (the boom-bust bug). The
QueueBoomBust alert must reach ``firing``, and every query of the dashboard must
return data.

Time is scaled down so that the test takes about half a minute instead of the
production rules' 6: the rules come from the same generator
(:mod:`alerts.rules`) with a 20 s window and 5 s ``for:`` durations (the
committed file uses 60 s and 5 min), and the pool's own monitor uses the same
20 s window.
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards import queue_health
from qhealth import ClassifierConfig, Monitor
from qhealth.rules import DEFAULT_ALERTS, RulesConfig, build, render
from tests.services import free_port, wait_ready

from .grafana import panel_queries
from .services import need_tool

WINDOW_S = 20.0
POLL_PERIOD_S = 4.0
WORKERS = 6
CAPACITY = 1000

SCALED = RulesConfig(
    classifier=ClassifierConfig(window_s=WINDOW_S),
    scrape_interval_s=1,
    alerts=tuple(replace(alert, for_s=5) for alert in DEFAULT_ALERTS),
    keep_firing_for_s=5,
)


@dataclass
class PollingPool:
    """Workers that sleep until the next multiple of the poll period, all together,
    then drain the queue: the fixed-interval polling of the textbook sample."""

    name: str
    monitor: Monitor
    stop: threading.Event

    def run(self) -> list[threading.Thread]:
        items: queue.Queue[float] = queue.Queue(maxsize=CAPACITY)
        probe = self.monitor.watch(self.name, depth=items.qsize, capacity=CAPACITY, workers=WORKERS)

        def produce() -> None:
            local = probe.local()
            while not self.stop.wait(0.05):
                for _ in range(2):  # ~40 items/s
                    try:
                        items.put_nowait(time.monotonic())
                    except queue.Full:
                        break
                    local.enqueued()

        def work() -> None:
            local = probe.local()
            while True:
                # Sleep to the next multiple of the poll period: every worker wakes at once.
                pause = POLL_PERIOD_S - time.monotonic() % POLL_PERIOD_S
                if self.stop.wait(pause):
                    return
                while True:
                    try:
                        enqueued_at = items.get_nowait()
                    except queue.Empty:
                        local.polled(False)
                        break
                    local.polled(True)
                    local.observe_wait(time.monotonic() - enqueued_at)
                    local.started()
                    began = time.monotonic()
                    local.attempted()
                    time.sleep(0.01)  # the downstream call
                    local.observe_duration(time.monotonic() - began)
                    local.succeeded()

        threads = [threading.Thread(target=produce, daemon=True)]
        threads += [threading.Thread(target=work, daemon=True) for _ in range(WORKERS)]
        for thread in threads:
            thread.start()
        return threads


@pytest.fixture
def boom_bust_pool() -> Iterator[tuple[str, str]]:
    """(queue name, scrape target host:port) of a running boom-busting pool."""
    from prometheus_client import CollectorRegistry

    from qhealth.prometheus import serve

    name = f"e2e-{uuid.uuid4().hex[:8]}"
    monitor = Monitor(interval=1.0, config=ClassifierConfig(window_s=WINDOW_S))
    stop = threading.Event()
    threads = PollingPool(name, monitor, stop).run()
    monitor.start()
    server = serve(monitor, listen="127.0.0.1:0", registry=CollectorRegistry())
    host, port = server.address
    try:
        yield name, f"{host}:{port}"
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        server.close()
        monitor.stop()


@pytest.fixture
def prometheus(boom_bust_pool: tuple[str, str], tmp_path: Path) -> Iterator[str]:
    """A throwaway Prometheus scraping the pool every second, with the scaled rules."""
    binary = need_tool("prometheus", "prometheus")
    _, target = boom_bust_pool
    rules_file = tmp_path / "qhealth.rules.yml"
    rules_file.write_text(render(build(SCALED)), encoding="utf-8")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_file)],
        "scrape_configs": [{"job_name": "pool", "static_configs": [{"targets": [target]}]}],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/-/ready", process, tmp_path / "prometheus.log", "Prometheus", timeout=15)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def _api(url: str, path: str, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{url}/api/v1/{path}{query}", timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


def _firing(url: str, name: str) -> dict[str, Any] | None:
    for alert in _api(url, "alerts")["alerts"]:
        labels = alert["labels"]
        if (
            labels.get("alertname") == "QueueBoomBust"
            and labels.get("queue") == name
            and alert["state"] == "firing"
        ):
            return dict(alert)
    return None


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_boom_bust_alert_fires_and_every_dashboard_query_returns_data(
    boom_bust_pool: tuple[str, str], prometheus: str
) -> None:
    name, _ = boom_bust_pool
    deadline = time.monotonic() + 100
    alert = _firing(prometheus, name)
    while alert is None:
        if time.monotonic() > deadline:
            verdicts = _api(prometheus, "query", query="queue:qhealth_condition:active")["result"]
            pytest.fail(f"QueueBoomBust did not fire within 100 s; the rules' verdicts: {verdicts}")
        time.sleep(1)
        alert = _firing(prometheus, name)

    # The annotations show the numbers behind the verdict.
    description = alert["annotations"]["description"]
    assert re.search(r"\d+(\.\d+)?% of the workers sat idle .* over the last 20s", description), alert
    assert re.search(r"each item about \d+(\.\d+)? s", description), alert
    assert alert["labels"]["severity"] == "warning"

    # The in-process classifier, exported by the same pool, says the same (give it a few
    # scrapes: its verdict and the rules' are judged on windows a scrape apart).
    in_process = f'qhealth_condition{{queue="{name}",condition="boom_bust"}}'
    for _ in range(10):
        values = [float(r["value"][1]) for r in _api(prometheus, "query", query=in_process)["result"]]
        if values == [1.0]:
            break
        time.sleep(1)
    assert values == [1.0], "the in-process classifier does not see boom-bust where the rules do"
    # ... and nothing else fires on this queue.
    others = _api(prometheus, "query", query=f'queue:qhealth_condition:active{{queue="{name}"}}')["result"]
    assert [r["metric"]["condition"] for r in others] == ["boom_bust"]

    dashboard = queue_health.to_json_data(queue_health.build(SCALED))
    empty = []
    for title, expr in panel_queries(dashboard):
        concrete = expr.replace('queue=~".+"', f'queue=~"{name}"')
        result = _api(prometheus, "query", query=concrete)["result"]
        if not result:
            empty.append(f"{title}: {concrete}")
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
