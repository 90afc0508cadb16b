"""Arrivals for Celery, counted where tasks are published (issue 16, item 5).

Worker-side adapters cannot see tasks arrive: the producers run elsewhere.
``qhealth.integrations.celery.count_published(app)`` in a producer counts the
tasks it publishes, per queue, on Celery's publish signals, and its monitor
exports them as ``qhealth_items_enqueued_total`` beside the depth the broker
shows; the workers report what they processed. Here the test process is the
producer, publishing through a real broker to a real Celery worker.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from qhealth import Monitor
from qhealth.integrations.celery import PublishCounter, count_published
from qhealth.prometheus import register
from tests.integration_brokers import (
    PYTHON,
    Proc,
    amqp_url,
    free_port,
    procs,
    readme_snippet,
    redis_url,
    unique,
    wait_until,
)

__all__ = ["amqp_url", "procs", "redis_url"]


@pytest.fixture
def producer() -> Iterator[Callable[[str], tuple[Any, Monitor]]]:
    """A Celery app bound to a broker URL, counting what it publishes into a monitor of its own."""
    made: list[tuple[Any, Monitor, PublishCounter]] = []

    def bind(url: str) -> tuple[Any, Monitor]:
        from celery import Celery

        app = Celery("qhealth-test-producer", broker=url, set_as_current=False)
        monitor = Monitor(interval=0.25)
        made.append((app, monitor, count_published(app, monitor=monitor)))
        return app, monitor

    yield bind
    for app, monitor, counter in made:
        counter.close()
        monitor.stop()
        app.close()


def _processed(out: Path) -> int:
    import json

    latest: dict[int, int] = {}
    if out.exists():
        for text in out.read_text().splitlines():
            if text.strip():
                line = json.loads(text)
                latest[line["pid"]] = line["processed_total"] or 0
    return sum(latest.values())


def _worker(procs: Callable[..., Proc], url: str, queue: str, out: Path) -> Proc:
    args = ["--url", url, "--queue", queue, "--out", str(out), "--pool", "threads", "--concurrency", "2"]
    return procs([PYTHON, "-m", "tests.integration_workers", "celery", *args])


@pytest.mark.slow
def test_a_producer_exports_the_tasks_it_published_and_the_workers_what_they_processed(
    procs: Callable[..., Proc], redis_url: str, producer: Callable[[str], tuple[Any, Monitor]], tmp_path: Path
) -> None:
    queue, other, out = unique("celery-arrivals"), unique("celery-other"), tmp_path / "ticks.jsonl"
    app, monitor = producer(redis_url)
    registry = CollectorRegistry()
    register(monitor, registry)
    for i in range(7):
        app.send_task("t.ok", (i,), queue=queue)
    app.send_task("t.ok", queue=other)
    monitor.tick()
    waiting = monitor.snapshot(queue)
    assert waiting is not None
    # Nothing consumes yet: the broker holds all seven, and the producer counted seven arrivals.
    assert (waiting.sample.enqueued_total, waiting.sample.depth) == (7, 7)
    # Workers, items processed, calls: the workers report them; here they are unknown, not 0.
    assert waiting.sample.workers is None and waiting.sample.processed_total is None
    assert waiting.sample.attempts_total is None and waiting.sample.idle_s_total is None
    other_snapshot = monitor.snapshot(other)
    assert other_snapshot is not None and other_snapshot.sample.enqueued_total == 1

    worker = _worker(procs, redis_url, queue, out)
    wait_until(lambda: _processed(out) == 7, 60, lambda: f"7 tasks processed\n{worker.output()}")
    monitor.tick()
    drained = monitor.snapshot(queue)
    assert drained is not None
    assert (drained.sample.enqueued_total, drained.sample.depth) == (7, 0)

    # Exported under the contract's name; the producer exports no processed count of its own.
    assert registry.get_sample_value("qhealth_items_enqueued_total", {"queue": queue}) == 7
    assert registry.get_sample_value("qhealth_queue_depth", {"queue": queue}) == 0
    processed = {"queue": queue, "outcome": "success"}
    assert registry.get_sample_value("qhealth_items_processed_total", processed) is None


@pytest.mark.slow
def test_on_rabbitmq_the_queue_a_task_is_routed_to_counts_it(
    amqp_url: str, producer: Callable[[str], tuple[Any, Monitor]]
) -> None:
    """A queue declared with its own routing key: the count goes to the queue's name."""
    from kombu import Exchange, Queue

    queue = unique("celery-routed")
    app, monitor = producer(amqp_url)
    app.conf.task_queues = [Queue(queue, Exchange(queue, type="direct"), routing_key=f"{queue}.key")]
    try:
        for _ in range(5):
            app.send_task("t.ok", queue=queue)
        monitor.tick()
        snapshot = monitor.snapshot(queue)
        assert snapshot is not None
        assert (snapshot.sample.enqueued_total, snapshot.sample.depth) == (5, 5)
        assert monitor.queues == [queue]
    finally:
        with app.connection_for_write() as connection:
            connection.default_channel.queue_delete(queue)
            connection.default_channel.exchange_delete(queue)


def test_a_broker_qhealth_cannot_read_leaves_arrivals_uncounted_and_says_so(
    producer: Callable[[str], tuple[Any, Monitor]], caplog: pytest.LogCaptureFixture
) -> None:
    """Celery's in-memory transport: no depth to read, so no reading at all
    rather than a depth made up; one warning names the queue."""
    app, monitor = producer("memory://")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            app.send_task("t.ok", queue="emails")
    assert monitor.queues == []
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("qhealth")]
    assert len(warnings) == 1
    assert "'emails'" in warnings[0] and "not counted" in warnings[0]


@pytest.mark.slow
def test_closing_the_counter_stops_counting(
    redis_url: str, producer: Callable[[str], tuple[Any, Monitor]]
) -> None:
    queue = unique("celery-closed")
    app, monitor = producer(redis_url)
    app.send_task("t.ok", queue=queue)
    counter = count_published(app)  # the same app: the counter already made
    assert counter.count(queue) == 1 and monitor.queues == [queue]
    counter.close()
    app.send_task("t.ok", queue=queue)
    assert counter.count(queue) is None and monitor.queues == []


@pytest.mark.slow
def test_the_documented_producer_snippet_exports_the_arrivals(redis_url: str) -> None:
    port = free_port()
    code = readme_snippet("celery-producer", "docs/instrument.md")
    listen = "127.0.0.1:9809"
    assert "redis://localhost:6379/0" in code and listen in code
    namespace: dict[str, Any] = {}
    exec(code.replace("redis://localhost:6379/0", redis_url).replace(listen, f"127.0.0.1:{port}"), namespace)
    app, monitor, server = namespace["app"], namespace["monitor"], namespace["server"]
    try:
        expected = 'qhealth_items_enqueued_total{queue="celery"} 1.0'

        def scraped() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                return str(response.read().decode())

        wait_until(lambda: expected in scraped(), 15, lambda: f"{expected} in\n{scraped()}")
    finally:
        count_published(app).close()
        server.close()
        monitor.stop()
        app.close()
        # The task waits in the default queue of this session's Redis: no later test's worker may take it.
        import redis

        redis.Redis.from_url(redis_url).delete("celery")
