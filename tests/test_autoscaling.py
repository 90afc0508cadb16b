"""Autoscaling on ``qhealth_workers_recommended`` (issue 16, item 3).

``deploy/keda/scaledobject.yaml`` is KEDA's Prometheus trigger on the
recommendation, ``AverageValue`` with threshold 1: KEDA asks for
ceil(value / 1) replicas, one per recommended worker. Its query is read from
the file and run against a real Prometheus scraping real pools (src_pool's
in-memory Pool, exported with ``qhealth.prometheus.serve``): it returns what
the pools' monitors recommend. And the recommendation never goes below the
workers busy right now, so scaling down never asks to stop running work.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from qhealth import ClassifierConfig, Monitor, Sample, classify
from qhealth.prometheus import serve
from src_pool import Pool

from .conftest import ROOT
from .prometheus_server import Prometheus
from .readme import snippet

SCALED_OBJECT = ROOT / "deploy" / "keda" / "scaledobject.yaml"
INTERVAL_S = 0.25
#: Each replica's monitor: a short window so that a test runs in seconds, and
#: min_workers=0 as docs/autoscaling.md asks of replicas whose shares are summed.
CONFIG = ClassifierConfig(window_s=2.0, min_workers=0)


def _trigger() -> dict[str, Any]:
    scaled = yaml.safe_load(SCALED_OBJECT.read_text(encoding="utf-8"))
    (trigger,) = scaled["spec"]["triggers"]
    assert isinstance(trigger, dict)
    return trigger


def _query_for(queue: str) -> str:
    """The trigger's query, with its queue."""
    query = str(_trigger()["metadata"]["query"])
    return re.sub(r'queue="[^"]*"', f'queue="{queue}"', query)


def _adapter_query(queue: str) -> str:
    """The prometheus-adapter rule of docs/autoscaling.md, rendered for the docs' HPA
    as the adapter does: its series, and the HPA's selector as label matchers (the
    adapter would add the HPA's namespace, which these series do not carry)."""
    (rule,) = yaml.safe_load(snippet("adapter-rule", "docs/autoscaling.md"))["externalRules"]
    hpa = yaml.safe_load(snippet("hpa", "docs/autoscaling.md"))
    (metric,) = hpa["spec"]["metrics"]
    selector = metric["external"]["metric"]["selector"]["matchLabels"]
    assert selector == {"queue": "orders"}, "the docs' HPA selects the docs' queue"
    matchers = ",".join(f'{k}="{queue if k == "queue" else v}"' for k, v in selector.items())
    series = re.match(r"\w+", rule["seriesQuery"])
    assert series is not None
    query = rule["metricsQuery"].replace("<<.Series>>", series.group(0))
    return str(query.replace("<<.LabelMatchers>>", matchers))


def test_the_documented_hpa_scales_on_the_same_value_as_keda() -> None:
    """docs/autoscaling.md: the adapter exposes the recommendation under its own name,
    and the HPA targets an average of 1 per replica, as KEDA's trigger does."""
    (rule,) = yaml.safe_load(snippet("adapter-rule", "docs/autoscaling.md"))["externalRules"]
    hpa = yaml.safe_load(snippet("hpa", "docs/autoscaling.md"))
    assert (hpa["apiVersion"], hpa["kind"]) == ("autoscaling/v2", "HorizontalPodAutoscaler")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == rule["name"]["as"] == "qhealth_workers_recommended"
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "1"}
    assert _adapter_query("orders") == 'sum(qhealth_workers_recommended{queue="orders"}) by (queue)'


def _replicas(value: float) -> int:
    """What KEDA asks of the HPA for an AverageValue trigger: ceil(value / threshold)."""
    return math.ceil(value / float(_trigger()["metadata"]["threshold"]))


def test_the_scaled_object_is_a_prometheus_trigger_on_the_recommendation_one_replica_per_worker() -> None:
    scaled = yaml.safe_load(SCALED_OBJECT.read_text(encoding="utf-8"))
    assert (scaled["apiVersion"], scaled["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"]
    trigger = _trigger()
    assert (trigger["type"], trigger["metricType"]) == ("prometheus", "AverageValue")
    metadata = trigger["metadata"]
    # KEDA's CRD holds trigger metadata as a map of strings: a bare 1 or false would be refused.
    assert all(isinstance(v, str) for v in metadata.values()), metadata
    assert metadata["threshold"] == "1"
    assert re.fullmatch(r'sum\(qhealth_workers_recommended\{queue="[^"]+"\}\)', metadata["query"])
    # No answer (every exporter down) is an error, which holds the fallback replicas, never a 0.
    assert metadata["ignoreNullValues"] == "false"
    assert spec["minReplicaCount"] <= spec["fallback"]["replicas"] <= spec["maxReplicaCount"]


def _steady(n: int, busy_now: int) -> list[Sample]:
    """2 items/s arrive and are processed, each holding one of 10 workers 0.5 s
    (1 busy on average); the last sample finds ``busy_now`` busy."""
    return [
        Sample(
            t=float(t),
            depth=0,
            workers=10,
            busy=busy_now if t == n - 1 else 1,
            enqueued_total=2 * t,
            processed_total=2 * t,
            failed_total=0,
            attempts_total=2 * t,
            rate_limited_total=0,
            idle_s_total=9.0 * t,
        )
        for t in range(n)
    ]


def test_the_recommendation_is_never_below_the_workers_busy_right_now() -> None:
    # Little's law: 2 items/s x 0.5 s / 0.7 -> 2 workers...
    assert classify(_steady(80, busy_now=1), 1.0)[-1].workers_recommended == 2
    # ...but 7 are busy now: scaling to 2 would stop 5 running items.
    assert classify(_steady(80, busy_now=7), 1.0)[-1].workers_recommended == 7


class Replica:
    """One replica of a pool: src_pool's in-memory Pool whose items take
    ``item_s``, its own monitor, and its own ``/metrics``."""

    def __init__(self, queue: str, item_s: float, workers: int = 20) -> None:
        self.item_s = item_s
        self.gate: asyncio.Event | None = None
        self.monitor = Monitor(interval=INTERVAL_S, config=CONFIG)
        self.pool = Pool(self._handle, name=queue, concurrency=workers, monitor=self.monitor)
        self.server = serve(self.monitor, listen="127.0.0.1:0", registry=CollectorRegistry())
        host, port = self.server.address
        self.target = f"{host}:{port}"

    async def _handle(self, item: object) -> None:
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(self.item_s)

    async def start(self) -> None:
        await self.pool.start()
        self.monitor.start()

    async def feed(self, per_second: float, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(int(per_second * seconds)):
            await asyncio.sleep(max(0.0, start + i / per_second - loop.time()))
            await self.pool.submit(i)

    async def freeze(self) -> int | None:
        """Stop the monitor: its last verdict is what ``/metrics`` serves from now on."""
        await asyncio.to_thread(self.monitor.stop)
        health = self.monitor.health(self.pool.name)
        return None if health is None else health.workers_recommended

    async def close(self) -> None:
        if self.gate is not None:
            self.gate.set()
        await asyncio.to_thread(self.monitor.stop)
        await self.pool.stop(drain_timeout=5.0)
        self.server.close()


@pytest.mark.slow
async def test_the_trigger_query_returns_the_recommendation_of_the_pools_replicas(tmp_path: Path) -> None:
    """Two replicas of the queue, each exporting the recommendation for its
    share of the work: the trigger's query, in a real Prometheus, is their sum,
    and KEDA would run that many one-worker replicas."""
    queue = "orders"
    fast, slow = Replica(queue, item_s=0.1), Replica(queue, item_s=0.2)
    prometheus = await asyncio.to_thread(Prometheus, [fast.target, slow.target], tmp_path)
    try:
        await fast.start()
        await slow.start()
        # 30 items/s x 0.1 s and 10 items/s x 0.2 s: about 3 and 2 busy, so about 3/0.7 and 2/0.7 workers.
        await asyncio.gather(fast.feed(30, 4.0), slow.feed(10, 4.0))
        mine, theirs = await fast.freeze(), await slow.freeze()
        assert mine is not None and theirs is not None
        assert 4 <= mine <= 8 and 2 <= theirs <= 6, (mine, theirs)
        answer = await asyncio.to_thread(
            prometheus.wait_until, _query_for(queue), lambda values: values == [float(mine + theirs)]
        )
        assert _replicas(answer[0]) == mine + theirs
        # The HPA of docs/autoscaling.md, through prometheus-adapter's query, reads the same value.
        assert await asyncio.to_thread(prometheus.query, _adapter_query(queue)) == answer
    finally:
        prometheus.close()
        await fast.close()
        await slow.close()


@pytest.mark.slow
async def test_through_prometheus_the_recommendation_keeps_every_busy_worker(tmp_path: Path) -> None:
    """Eight items hold eight workers and nothing more arrives: Little's law
    alone would say 0 workers (no arrivals, min_workers=0), but the trigger's
    query answers 8, and KEDA keeps 8 replicas."""
    queue = "orders"
    replica = Replica(queue, item_s=0.0)
    replica.gate = asyncio.Event()  # the items wait on it: they run until the test ends
    prometheus = await asyncio.to_thread(Prometheus, [replica.target], tmp_path)
    try:
        await replica.start()
        for i in range(8):
            await replica.pool.submit(i)
        # Judged once the arrivals have left the window: no arrivals, 8 busy.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            health = replica.monitor.health(queue)
            if health is not None and health.arrival_rate == 0 and health.workers_recommended is not None:
                break
            await asyncio.sleep(INTERVAL_S)
        recommended = await replica.freeze()
        snapshot = replica.monitor.snapshot(queue)
        assert snapshot is not None and snapshot.sample.busy == 8
        assert recommended == 8
        answer = await asyncio.to_thread(prometheus.wait_until, _query_for(queue), lambda v: v == [8.0])
        assert _replicas(answer[0]) == 8
        busy = await asyncio.to_thread(prometheus.query, f'qhealth_workers_busy{{queue="{queue}"}}')
        assert busy == [8.0]
    finally:
        prometheus.close()
        await replica.close()


@pytest.mark.slow
def test_the_docs_walkthrough_answers_a_recommendation_from_the_demo(tmp_path: Path) -> None:
    """docs/autoscaling.md, *Try it on one machine*: the demo served, the Prometheus
    configured as written (ports aside), and the query answers a worker count."""
    import subprocess
    import sys

    from .services import free_port

    block = snippet("try-autoscaling", "docs/autoscaling.md")
    demo_line = block.splitlines()[0]
    config = block.split("<<'EOF'\n", 1)[1].split("\nEOF", 1)[0]
    query = re.search(r"query=([^']+)'", block)
    assert demo_line.startswith("qhealth demo ") and query, block
    port = free_port()
    demo_args = demo_line.split(">", 1)[0].split()[2:]
    demo_args = [a.replace("127.0.0.1:9808", f"127.0.0.1:{port}") for a in demo_args]
    demo = subprocess.Popen(
        [sys.executable, "-m", "qhealth", "demo", *demo_args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        written = config.replace("127.0.0.1:9808", f"127.0.0.1:{port}")
        assert f"127.0.0.1:{port}" in written
        prometheus = Prometheus([], tmp_path, config_text=written)
        try:
            answer = prometheus.wait_until(query.group(1), lambda v: len(v) == 1 and v[0] >= 1, timeout_s=45)
        finally:
            prometheus.close()
        assert answer[0] == int(answer[0])  # a number of workers
    finally:
        demo.terminate()
        _, err = demo.communicate(timeout=20)
    assert "Traceback" not in err
