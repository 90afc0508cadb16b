"""Sidecar sources on a real Redis: a bare list, a stream group, an RQ queue with a real worker."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest
import redis
import rq

from qhealth import ClassifierConfig, Monitor
from qhealth.brokers.redis_stream import RedisStreamSource
from qhealth.brokers.rq_queue import RQSource
from qhealth.sidecar import open_source
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


def output_bytes(client: redis.Redis) -> int:
    return int(client.info("stats")["total_net_output_bytes"])


def test_a_stream_whose_lag_redis_cannot_tell_is_not_read_entry_by_entry(client: redis.Redis) -> None:
    """After an XDEL past the group's position Redis has no lag: the depth is unknown,
    the reason is given, and the read fetches at most one entry, not the backlog."""
    stream, group = unique("stream-xdel"), "g"
    ids = [client.xadd(stream, {"blob": "x" * 20_000}) for _ in range(200)]
    client.xgroup_create(stream, group, id="0")
    client.xreadgroup(group, "c1", {stream: ">"}, count=3)
    client.xdel(stream, ids[100])
    source = RedisStreamSource(client, stream, group)
    before = output_bytes(client)
    assert source.read() is None
    assert output_bytes(client) - before < 100_000  # the old read fetched all 196 entries: 4 MB
    assert source.problem is not None
    assert "cannot tell" in source.problem and repr(stream) in source.problem


def test_a_group_created_at_an_arbitrary_id_has_no_depth(client: redis.Redis) -> None:
    stream = unique("stream-mid")
    ids = [client.xadd(stream, {"n": i}) for i in range(10)]
    client.xdel(stream, ids[7])
    client.xgroup_create(stream, "mid", id=ids[4])
    source = RedisStreamSource(client, stream, "mid")
    assert source.read() is None and source.problem is not None


def test_a_group_before_the_first_entry_has_every_entry_undelivered(client: redis.Redis) -> None:
    """Redis has no lag after deletions, but a group that has read nothing still
    has the whole stream undelivered: that is exact and cheap (XLEN)."""
    stream = unique("stream-start")
    ids = [client.xadd(stream, {"n": i}) for i in range(10)]
    client.xgroup_create(stream, "fresh", id="0")
    client.xdel(stream, ids[5])
    reading = RedisStreamSource(client, stream, "fresh").read()
    assert reading is not None and reading.depth == 9
    assert reading.oldest_age_s is not None and 0 <= reading.oldest_age_s < 60


def test_a_group_at_the_last_id_has_nothing_undelivered_despite_deletions(client: redis.Redis) -> None:
    stream = unique("stream-done")
    ids = [client.xadd(stream, {"n": i}) for i in range(10)]
    client.xgroup_create(stream, "done", id="$")
    client.xdel(stream, ids[3])
    reading = RedisStreamSource(client, stream, "done").read()
    assert reading is not None and (reading.depth, reading.oldest_age_s) == (0, None)


@pytest.mark.slow
def test_rq_source_counts_every_job_of_a_burst_worker_that_exited(
    procs: Callable[..., Proc], redis_url: str, client: redis.Redis
) -> None:
    """A stopping worker leaves RQ's worker set at once, but its hash keeps its
    final counts for 60 s: the source reads it once more, so the jobs run since
    the previous read are counted."""
    name = unique("rq-burst")
    queue = rq.Queue(name, connection=redis.Redis.from_url(redis_url))
    queue.enqueue(jobs.hang, 1.0)  # keeps the worker busy while the source first sees it
    for i in range(18):
        queue.enqueue(jobs.ok, i)
    for _ in range(2):
        queue.enqueue(jobs.fail)
    source = RQSource(client, name)
    worker = procs([PYTHON, "-m", "rq.cli", "worker", "--url", redis_url, "--burst", "--quiet", name])
    wait_until(lambda: registered_workers(source) == 1, 20, lambda: f"the worker\n{worker.output()}")
    seen_alive = source.read()
    assert seen_alive is not None and (seen_alive.processed_total or 0) < 21
    assert worker.popen.wait(60) == 0, worker.output()
    reading = source.read()
    assert reading is not None
    assert (reading.processed_total, reading.failed_total, reading.workers) == (21, 2, 0)
    assert source.read() == reading  # folded into the retired total: it stays
