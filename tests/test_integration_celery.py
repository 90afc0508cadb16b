"""Celery adapter: real Celery worker processes on a throwaway Redis and on the local RabbitMQ."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration_brokers import PYTHON, Proc, amqp_url, procs, redis_url, unique, wait_until

__all__ = ["amqp_url", "procs", "redis_url"]

pytestmark = pytest.mark.slow


def latest_per_process(path: Path) -> dict[int, dict[str, Any]]:
    """The last line each worker process wrote (prefork children write their own)."""
    latest: dict[int, dict[str, Any]] = {}
    if path.exists():
        for text in path.read_text().splitlines():
            if text.strip():
                line = json.loads(text)
                latest[line["pid"]] = line
    return latest


def total(path: Path, field: str) -> int:
    return sum(line[field] or 0 for line in latest_per_process(path).values())


@pytest.fixture
def celery_app(request: pytest.FixtureRequest) -> Iterator[Callable[[str], Any]]:
    """The tests' Celery app bound to a broker URL, for sending tasks."""
    made: list[Any] = []

    def bind(url: str) -> Any:
        from celery import Celery

        app = Celery("qhealth-test-producer", broker=url, set_as_current=False)
        made.append(app)
        return app

    yield bind
    for app in made:
        app.close()


def start_worker(
    procs: Callable[..., Proc], url: str, queue: str, out: Path, pool: str, concurrency: int
) -> Proc:
    options = ["--pool", pool, "--concurrency", str(concurrency)]
    return procs(
        [
            PYTHON,
            "-m",
            "tests.integration_workers",
            "celery",
            "--url",
            url,
            "--queue",
            queue,
            "--out",
            str(out),
            *options,
        ]
    )


def send_mix(app: Any, queue: str) -> None:
    for i in range(6):
        app.send_task("t.ok", (i,), queue=queue)
    for _ in range(3):
        app.send_task("t.fail", queue=queue)
    for _ in range(3):
        app.send_task("t.limited", queue=queue)


def delete_amqp_queue(url: str, queue: str) -> None:
    import kombu

    with kombu.Connection(url) as connection:
        connection.default_channel.queue_delete(queue)
        connection.default_channel.exchange_delete(queue)  # Celery declared one per queue


def test_a_thread_pool_worker_on_redis_counts_successes_failures_and_429s(
    procs: Callable[..., Proc], redis_url: str, celery_app: Callable[[str], Any], tmp_path: Path
) -> None:
    queue, out = unique("celery"), tmp_path / "ticks.jsonl"
    worker = start_worker(procs, redis_url, queue, out, "threads", 2)
    app = celery_app(redis_url)
    send_mix(app, queue)
    wait_until(lambda: total(out, "processed_total") == 12, 60, lambda: f"12 tasks\n{worker.output()}")
    (line,) = latest_per_process(out).values()
    assert (line["failed_total"], line["rate_limited_total"], line["attempts_total"]) == (6, 3, 12)
    assert (line["workers"], line["busy"], line["depth"]) == (2, 0, 0)
    assert line["enqueued_total"] is None


def test_a_retried_429_counts_each_run(
    procs: Callable[..., Proc], redis_url: str, celery_app: Callable[[str], Any], tmp_path: Path
) -> None:
    queue, out = unique("celery-retry"), tmp_path / "ticks.jsonl"
    worker = start_worker(procs, redis_url, queue, out, "threads", 2)
    app = celery_app(redis_url)
    app.send_task("t.retry_429", queue=queue)  # one retry, then it fails for good
    wait_until(lambda: total(out, "processed_total") == 2, 60, lambda: f"2 runs\n{worker.output()}")
    wait_until(lambda: total(out, "busy") == 0, 10, "the retry to end")
    (line,) = latest_per_process(out).values()
    assert (line["failed_total"], line["rate_limited_total"], line["attempts_total"]) == (2, 2, 2)


def test_prefork_children_on_rabbitmq_each_count_their_share(
    procs: Callable[..., Proc], amqp_url: str, celery_app: Callable[[str], Any], tmp_path: Path
) -> None:
    queue, out = unique("celery-amqp"), tmp_path / "ticks.jsonl"
    worker = start_worker(procs, amqp_url, queue, out, "prefork", 2)
    try:
        app = celery_app(amqp_url)
        send_mix(app, queue)
        wait_until(lambda: total(out, "processed_total") == 12, 60, lambda: f"12 tasks\n{worker.output()}")
        lines = latest_per_process(out)
        assert worker.pid not in lines  # the parent runs no task: only the children report
        assert total(out, "failed_total") == 6 and total(out, "rate_limited_total") == 3
        assert all(line["workers"] == 1 and line["depth"] == 0 for line in lines.values())
    finally:
        worker.stop()
        delete_amqp_queue(amqp_url, queue)


def test_a_worker_stuck_on_a_task_is_classified_stalled(
    procs: Callable[..., Proc], redis_url: str, celery_app: Callable[[str], Any], tmp_path: Path
) -> None:
    queue, out = unique("celery-stall"), tmp_path / "ticks.jsonl"
    worker = start_worker(procs, redis_url, queue, out, "threads", 1)
    app = celery_app(redis_url)
    app.send_task("t.ok", queue=queue)
    wait_until(lambda: total(out, "processed_total") == 1, 60, lambda: f"the first task\n{worker.output()}")
    app.send_task("t.hang", (60,), queue=queue)
    for i in range(3):
        app.send_task("t.ok", (i,), queue=queue)

    def state() -> str:
        lines = latest_per_process(out)
        return next(iter(lines.values()))["state"] if lines else ""

    wait_until(lambda: state() == "stalled", 30, lambda: f"a stalled verdict\n{latest_per_process(out)}")
    (line,) = latest_per_process(out).values()
    assert (line["busy"], line["workers"], line["depth"]) == (1, 1, 3)
    assert os.kill(worker.pid, 0) is None  # the process is alive: stuck, not dead
