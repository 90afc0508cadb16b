"""Many queues in one watch: found by pattern in each framework's registry, read in two round trips."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest
import redis
import rq

from qhealth.sidecar import Sidecar
from tests import integration_jobs as jobs
from tests.integration_brokers import PYTHON, redis_url, unique

__all__ = ["redis_url"]


class CountingConnection(redis.Connection):
    """A redis-py connection that counts what it sends: one send is one round trip
    (a pipeline goes out in one send)."""

    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sends += 1
        super().send_packed_command(command, check_health)


def counting_sidecar(kind: str, url: str) -> Sidecar:
    client = redis.Redis.from_url(url, decode_responses=True, connection_class=CountingConnection)
    return Sidecar(kind, url, client=client)


def test_two_hundred_rq_queues_are_read_in_two_round_trips(redis_url: str) -> None:
    prefix = unique("many")
    connection = redis.Redis.from_url(redis_url)
    for i in range(200):
        rq.Queue(f"{prefix}-{i}", connection=connection).enqueue(jobs.ok, i)
    sidecar = counting_sidecar("rq", redis_url)
    names = sidecar.discover(f"{prefix}-*")
    assert len(names) == 200
    sources = {name: sidecar.watch(name) for name in names}
    CountingConnection.sends = 0
    readings = {name: source.read() for name, source in sources.items()}  # one tick of a monitor
    assert CountingConnection.sends == 2
    assert all(r is not None and r.depth == 1 and r.oldest_age_s is not None for r in readings.values())
    CountingConnection.sends = 0
    for source in sources.values():  # the next tick: one more read of the whole group
        source.read()
    assert CountingConnection.sends == 2


def test_a_pattern_finds_only_the_queues_it_matches(redis_url: str) -> None:
    prefix = unique("pick")
    connection = redis.Redis.from_url(redis_url)
    for name in ("emails-a", "emails-b", "sms-a"):
        rq.Queue(f"{prefix}-{name}", connection=connection).enqueue(jobs.ok, 1)
    found = Sidecar("rq", redis_url).discover(f"{prefix}-emails-*")
    assert found == [f"{prefix}-emails-a", f"{prefix}-emails-b"]


def test_an_empty_celery_queue_is_found_by_its_binding_though_its_list_is_missing(redis_url: str) -> None:
    from celery import Celery

    queue = unique("celery-empty")
    app = Celery("producer", broker=redis_url, set_as_current=False)
    try:
        app.send_task("t.ok", queue=queue, priority=5)
    finally:
        app.close()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.delete(*client.keys(f"{queue}*"))  # drained: no list left, only kombu's binding
    sidecar = Sidecar("celery", redis_url)
    assert sidecar.discover(f"{queue[:-4]}*") == [queue]
    reading = sidecar.watch(queue).read()
    assert reading is not None and reading.depth == 0


def test_arq_queues_are_found_by_their_sorted_set_or_their_workers_health_check(redis_url: str) -> None:
    prefix = unique("arqs")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.zadd(f"{prefix}:queue-a", {"job1": time.time() * 1000})
    client.set(f"{prefix}:queue-b:health-check", "Jan-01 j_complete=3 j_failed=0 j_retried=0 j_ongoing=0")
    assert Sidecar("arq", redis_url).discover(f"{prefix}:*") == [f"{prefix}:queue-a", f"{prefix}:queue-b"]


@pytest.mark.parametrize(("kind", "make"), [("redis-list", "rpush"), ("redis-stream", "xadd")])
def test_lists_and_streams_are_found_by_key_and_type(redis_url: str, kind: str, make: str) -> None:
    prefix = unique(kind)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    for name in ("a", "b"):
        if make == "rpush":
            client.rpush(f"{prefix}:{name}", 1)
        else:
            client.xadd(f"{prefix}:{name}", {"n": 1})
    client.set(f"{prefix}:not-a-queue", 1)
    assert Sidecar(kind, redis_url, group="g" if kind == "redis-stream" else None).discover(
        f"{prefix}:*"
    ) == [
        f"{prefix}:a",
        f"{prefix}:b",
    ]


@pytest.mark.slow
def test_watch_reads_every_queue_a_pattern_matches(redis_url: str) -> None:
    prefix = unique("cli")
    connection = redis.Redis.from_url(redis_url)
    for i in range(5):
        queue = rq.Queue(f"{prefix}-{i}", connection=connection)
        for _ in range(i + 1):
            queue.enqueue(jobs.ok, 1)
    queue_arg = f"{prefix}-*"
    result = subprocess.run(
        [PYTHON, "-m", "qhealth", "watch", "--kind", "rq", "--queue", queue_arg, "--url", redis_url,
         "--interval", "0.2", "--duration", "1.1", "--format", "jsonl"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"watching rq 5 queues ('{prefix}-0', '{prefix}-1', '{prefix}-2', ...)" in result.stdout
    latest = {}
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            sample = json.loads(line)
            latest[sample["queue"]] = sample["depth"]
    assert latest == {f"{prefix}-{i}": i + 1 for i in range(5)}


@pytest.mark.slow
def test_events_with_several_celery_queues_are_refused() -> None:
    sidecar = Sidecar("celery", "redis://127.0.0.1:1/0", events=True)
    try:
        sidecar.watch("a")
        with pytest.raises(ValueError, match="--events needs a single Celery queue"):
            sidecar.watch("b")
    finally:
        sidecar.group.close()
