"""Sidecar sources on a real Redis: a bare list, a stream group, an RQ queue with a real worker."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest
import redis
import rq

from qhealth import ClassifierConfig, Monitor
from qhealth.sidecar import open_source
from qhealth.sidecar.redis_stream import RedisStreamSource
from qhealth.sidecar.rq_queue import RQSource
from tests import integration_jobs as jobs
from tests.integration_brokers import PYTHON, Proc, procs, redis_url, unique, wait_until

__all__ = ["procs", "redis_url"]


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True)


def test_a_redis_list_shows_its_length_and_nothing_else(redis_url: str, client: redis.Redis) -> None:
    key = unique("list")
    client.rpush(key, *range(5))
    source = open_source("redis-list", redis_url, key)
    reading = source.read()
    assert reading is not None and reading.depth == 5
    assert (reading.workers, reading.processed_total, reading.enqueued_total) == (None, None, None)
    assert set(source.unknown) >= {"workers", "busy", "processed_total", "enqueued_total"}


def test_a_stream_group_shows_lag_consumers_and_acknowledged_entries(
    redis_url: str, client: redis.Redis
) -> None:
    stream, group = unique("stream"), "senders"
    for i in range(10):
        client.xadd(stream, {"n": i})
    client.xgroup_create(stream, group, id="0")
    delivered = client.xreadgroup(group, "c1", {stream: ">"}, count=4)
    ids = [entry_id for entry_id, _ in delivered[0][1]]
    client.xack(stream, group, *ids[:3])
    source = RedisStreamSource(client, stream, group)
    reading = source.read()
    assert reading is not None
    assert (reading.depth, reading.enqueued_total, reading.processed_total) == (6, 10, 3)
    assert (reading.workers, reading.busy) == (1, 1)  # c1 holds one unacknowledged entry
    assert reading.oldest_age_s is not None and 0 <= reading.oldest_age_s < 60
    assert [name for name, _, _ in source.consumers] == ["c1"]


def test_a_missing_stream_group_is_an_error_naming_it(redis_url: str, client: redis.Redis) -> None:
    stream = unique("stream")
    client.xadd(stream, {"n": 1})
    source = open_source("redis-stream", redis_url, stream, group="nobody")
    with pytest.raises(LookupError, match="nobody"):
        source.read()


def test_a_stream_whose_consumer_stops_is_classified_stalled(redis_url: str, client: redis.Redis) -> None:
    stream, group = unique("stream-stall"), "g"
    client.xgroup_create(stream, group, id="0", mkstream=True)
    clock = [0.0]
    monitor = Monitor(
        interval=1.0, config=ClassifierConfig(window_s=4, min_window_intervals=2), clock=lambda: clock[0]
    )
    monitor.watch_source(stream, RedisStreamSource(client, stream, group))
    for second in range(12):  # a consumer took one entry, then stopped; entries keep coming
        client.xadd(stream, {"n": second})
        if second == 0:
            client.xreadgroup(group, "worker-1", {stream: ">"}, count=1)
        clock[0] += 1.0
        monitor.tick()
    health = monitor.health(stream)
    assert health is not None and health.state == "stalled", health


def registered_workers(source: RQSource) -> int:
    """Workers of the queue, 0 while RQ does not know it yet (no worker has registered)."""
    try:
        reading = source.read()
    except LookupError:
        return 0
    return reading.workers or 0 if reading is not None else 0


@pytest.mark.slow
def test_rq_source_reads_workers_and_counts_from_a_real_worker(
    procs: Callable[..., Proc], redis_url: str, client: redis.Redis
) -> None:
    name = unique("rq-side")
    worker = procs([PYTHON, "-m", "rq.cli", "worker", "--url", redis_url, "--quiet", name])
    source = RQSource(client, name)
    wait_until(lambda: registered_workers(source) == 1, 20, lambda: f"the worker\n{worker.output()}")
    queue = rq.Queue(name, connection=redis.Redis.from_url(redis_url))
    for i in range(5):
        queue.enqueue(jobs.ok, i)
    for _ in range(2):
        queue.enqueue(jobs.fail)
    wait_until(lambda: source.read().processed_total == 7, 30, lambda: f"7 jobs\n{worker.output()}")
    reading = source.read()
    assert (reading.failed_total, reading.depth, reading.workers) == (2, 0, 1)
    assert reading.enqueued_total is None and reading.rate_limited_total is None


@pytest.mark.slow
def test_rq_source_sees_a_stopped_worker_as_stalled(
    procs: Callable[..., Proc], redis_url: str, client: redis.Redis
) -> None:
    name = unique("rq-side-stall")
    worker = procs([PYTHON, "-m", "rq.cli", "worker", "--url", redis_url, "--quiet", name])
    source = RQSource(client, name)
    wait_until(lambda: registered_workers(source) == 1, 20, lambda: f"the worker\n{worker.output()}")
    queue = rq.Queue(name, connection=redis.Redis.from_url(redis_url))
    queue.enqueue(jobs.ok, 1)
    wait_until(lambda: source.read().processed_total == 1, 20, "the first job")
    worker.signal_group(signal.SIGSTOP)
    for i in range(3):
        queue.enqueue(jobs.ok, i)
    monitor = Monitor(interval=0.2, config=ClassifierConfig(window_s=1.6, min_window_intervals=2))
    monitor.watch_source(name, source)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.2)
        monitor.tick()
        health = monitor.health(name)
        if health is not None and health.state == "stalled":
            break
    health = monitor.health(name)
    assert health is not None and health.state == "stalled", health
    snapshot = monitor.snapshot(name)
    # The stopped worker's pending BLPOP may already have taken one job server-side.
    assert snapshot is not None and snapshot.sample.depth in (2, 3)
