"""Celery sidecar: depth from RabbitMQ and Redis, counts from task events of a real worker."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from qhealth import ClassifierConfig, Monitor, Reading
from qhealth.brokers.celery_queue import CelerySource, RedisCeleryQueue
from tests.integration_brokers import PYTHON, Proc, amqp_url, procs, redis_url, unique, wait_until

__all__ = ["amqp_url", "procs", "redis_url"]


@pytest.fixture
def producer() -> Iterator[Callable[[str], Any]]:
    from celery import Celery

    apps: list[Any] = []

    def make(url: str) -> Any:
        app = Celery("qhealth-test-producer", broker=url, set_as_current=False)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


@pytest.fixture
def sources() -> Iterator[Callable[..., CelerySource]]:
    made: list[CelerySource] = []

    def make(url: str, queue: str, **kwargs: Any) -> CelerySource:
        source = CelerySource(url, queue, **kwargs)
        made.append(source)
        return source

    yield make
    for source in made:
        source.close()


def delete_amqp_queue(url: str, queue: str) -> None:
    import kombu

    with kombu.Connection(url) as connection:
        connection.default_channel.queue_delete(queue)
        connection.default_channel.exchange_delete(queue)


def test_depth_on_redis_counts_every_priority_list(
    redis_url: str, producer: Callable[[str], Any], sources: Callable[..., CelerySource]
) -> None:
    queue = unique("celery-depth")
    app = producer(redis_url)
    for priority in (0, 0, 5, 9):
        app.send_task("t.ok", queue=queue, priority=priority)
    source = sources(redis_url, queue)
    reading = source.read()
    assert reading.depth == 4
    assert reading.processed_total is None and reading.busy is None
    assert "--events" in source.unknown["processed_total"]


def test_depth_on_rabbitmq_is_the_ready_messages(
    amqp_url: str, producer: Callable[[str], Any], sources: Callable[..., CelerySource]
) -> None:
    queue = unique("celery-depth-amqp")
    try:
        app = producer(amqp_url)
        for _ in range(3):
            app.send_task("t.ok", queue=queue)
        source = sources(amqp_url, queue)
        wait_until(lambda: source.read().depth == 3, 10, "3 messages on RabbitMQ")
        assert source.consumers == 0
    finally:
        delete_amqp_queue(amqp_url, queue)


def test_a_queue_rabbitmq_does_not_have_is_an_error_naming_it(
    amqp_url: str, sources: Callable[..., CelerySource]
) -> None:
    queue = unique("celery-missing")
    source = sources(amqp_url, queue)
    with pytest.raises(RuntimeError, match=queue):
        source.read()
    with pytest.raises(RuntimeError, match=queue):  # and the source recovers its channel to say it again
        source.read()


@pytest.mark.slow
def test_task_events_count_a_real_worker_and_a_stopped_one_is_stalled(
    procs: Callable[..., Proc],
    amqp_url: str,
    producer: Callable[[str], Any],
    sources: Callable[..., CelerySource],
    tmp_path: Any,
) -> None:
    queue = unique("celery-events")
    source = sources(amqp_url, queue, events=True)
    assert source.events is not None
    assert source.events.ready.wait(15), "the event queue was never consumed"
    options = ["--out", str(tmp_path / "ticks.jsonl"), "--pool", "threads", "--concurrency", "2"]
    worker = procs(
        [PYTHON, "-m", "tests.integration_workers", "celery", "--url", amqp_url, "--queue", queue, *options],
        env={"QHEALTH_TEST_EVENTS": "1"},
    )
    try:
        app = producer(amqp_url)
        for i in range(5):
            app.send_task("t.ok", (i,), queue=queue)
        for _ in range(2):
            app.send_task("t.fail", queue=queue)
        wait_until(
            lambda: source.read().processed_total == 7, 60, lambda: f"7 task events\n{worker.output()}"
        )
        reading = source.read()
        assert (reading.failed_total, reading.busy, reading.depth) == (2, 0, 0)
        assert reading.workers is None  # events do not tell pool sizes: unknown, not guessed

        worker.signal_group(signal.SIGSTOP)
        for i in range(3):
            app.send_task("t.ok", (i,), queue=queue)
        monitor = Monitor(interval=0.2, config=ClassifierConfig(window_s=1.6, min_window_intervals=2))
        monitor.watch_source(queue, source)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            time.sleep(0.2)
            monitor.tick()
            health = monitor.health(queue)
            if health is not None and health.state == "stalled":
                break
        health = monitor.health(queue)
        assert health is not None and health.state == "stalled", health
        snapshot = monitor.snapshot(queue)
        # RabbitMQ may already have pushed up to 2 (concurrency x prefetch 1) to the stopped worker
        assert snapshot is not None and 1 <= snapshot.sample.depth <= 3
    finally:
        worker.stop()
        delete_amqp_queue(amqp_url, queue)


def list_lengths(url: str, queue: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return sum(int(client.llen(key)) for key in RedisCeleryQueue(client, queue).keys)
    finally:
        client.close()


@pytest.mark.slow
def test_depth_on_redis_counts_prefetched_messages_and_every_priority_list_of_a_real_worker(
    procs: Callable[..., Proc],
    redis_url: str,
    producer: Callable[[str], Any],
    sources: Callable[..., CelerySource],
    tmp_path: Any,
) -> None:
    """A worker running one task with 3 more prefetched (prefetch 4) leaves 3 on
    the priority lists: depth 6, the running task left out thanks to events. Once
    it drains them, the lists are missing keys: depth 0, not an error."""
    queue = unique("celery-prefetch")
    source = sources(redis_url, queue, events=True)
    without_events = sources(redis_url, queue)
    assert source.events is not None and source.events.ready.wait(15), "the event queue was never consumed"
    options = ["--out", str(tmp_path / "ticks.jsonl"), "--pool", "threads", "--concurrency", "1"]
    worker = procs(
        [PYTHON, "-m", "tests.integration_workers", "celery", "--url", redis_url, "--queue", queue,
         *options, "--prefetch", "4"],
        env={"QHEALTH_TEST_EVENTS": "1"},
    )  # fmt: skip
    app = producer(redis_url)
    app.send_task("t.hang", (8,), queue=queue)
    wait_until(lambda: (source.read() or Reading(depth=0)).busy == 1, 30, lambda: f"start\n{worker.output()}")
    for priority in (0, 0, 5, 5, 9, 9):
        app.send_task("t.ok", (priority,), queue=queue, priority=priority)

    def seen() -> tuple[int | None, int | None]:
        reading = source.read()
        return (reading.depth, reading.busy) if reading is not None else (None, None)

    wait_until(lambda: list_lengths(redis_url, queue) == 3, 20, lambda: f"3 prefetched\n{worker.output()}")
    assert seen() == (6, 1)  # 3 on the lists + 3 prefetched; the running one is not waiting
    plain = without_events.read()
    assert plain is not None and plain.depth == 7  # without events, the running task (acks_late) counts
    wait_until(lambda: seen() == (0, 0), 30, lambda: f"drained\n{worker.output()}")
    assert list_lengths(redis_url, queue) == 0


@pytest.mark.slow
def test_the_oldest_age_comes_from_stamped_messages_on_every_priority_list(
    redis_url: str, producer: Callable[[str], Any], sources: Callable[..., CelerySource]
) -> None:
    from celery.signals import before_task_publish

    from qhealth.integrations.celery import stamp_published

    queue = unique("celery-oldest")
    app = producer(redis_url)
    source = sources(redis_url, queue)
    # The stamp is process-wide: an earlier test in this process may have set it.
    before_task_publish.disconnect(dispatch_uid="qhealth-stamp-published")
    app.send_task("t.ok", queue=queue, priority=9)  # before the stamp: no time to read
    reading = source.read()
    assert reading is not None and reading.oldest_age_s is None
    assert "stamp_published" in source.unknown["oldest_age_s"]
    stamp_published(app)
    app.send_task("t.ok", queue=queue, priority=5)  # the oldest stamped one, on the 6 list
    time.sleep(1.0)
    app.send_task("t.ok", queue=queue, priority=0)
    fresh = sources(redis_url, queue)  # the first source looks again only a minute later
    reading = fresh.read()
    assert reading is not None and reading.depth == 3
    assert reading.oldest_age_s is not None and 1.0 <= reading.oldest_age_s < 30
    assert "oldest_age_s" not in fresh.unknown
