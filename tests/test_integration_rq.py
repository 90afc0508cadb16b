"""RQ adapter: a real RQ worker process, instrumented, running real jobs on a throwaway Redis."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import rq

from qhealth import Monitor
from qhealth.integrations.rq import instrument
from tests import integration_jobs as jobs
from tests.integration_brokers import PYTHON, Proc, free_port, procs, redis_url, scrape, unique, wait_until

__all__ = ["procs", "redis_url"]  # fixtures used below

pytestmark = pytest.mark.slow


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(text) for text in path.read_text().splitlines() if text.strip()]


def last(path: Path) -> dict[str, Any]:
    seen = lines(path)
    return seen[-1] if seen else {}


def start_worker(procs: Callable[..., Proc], url: str, queue: str, out: Path, kind: str = "rq") -> Proc:
    return procs(
        [PYTHON, "-m", "tests.integration_workers", kind, "--url", url, "--queue", queue, "--out", str(out)]
    )


def enqueue_mix(queue: rq.Queue) -> None:
    for i in range(6):
        queue.enqueue(jobs.ok, i)
    for _ in range(3):
        queue.enqueue(jobs.fail)
    for _ in range(3):
        queue.enqueue(jobs.limited)


def horse_of(worker_pid: int) -> int | None:
    children = Path(f"/proc/{worker_pid}/task/{worker_pid}/children")
    text = children.read_text().split() if children.exists() else []
    return int(text[0]) if text else None


def test_a_forking_worker_counts_successes_failures_and_429s(
    procs: Callable[..., Proc], redis_url: str, tmp_path: Path
) -> None:
    name, out = unique("rq"), tmp_path / "ticks.jsonl"
    worker = start_worker(procs, redis_url, name, out)
    queue = rq.Queue(name, connection=redis.Redis.from_url(redis_url))
    enqueue_mix(queue)
    wait_until(
        lambda: last(out).get("processed_total") == 12,
        60,
        lambda: f"12 jobs processed\n{worker.output()}\n{lines(out)[-2:]}",
    )
    sample = last(out)
    assert (sample["failed_total"], sample["rate_limited_total"], sample["attempts_total"]) == (6, 3, 12)
    assert (sample["workers"], sample["busy"], sample["depth"]) == (1, 0, 0)
    assert sample["enqueued_total"] is None  # producers run elsewhere: unknown, not zero


def test_a_stopped_work_horse_is_classified_stalled(
    procs: Callable[..., Proc], redis_url: str, tmp_path: Path
) -> None:
    name, out = unique("rq-stall"), tmp_path / "ticks.jsonl"
    worker = start_worker(procs, redis_url, name, out)
    queue = rq.Queue(name, connection=redis.Redis.from_url(redis_url))
    queue.enqueue(jobs.ok, 1)
    wait_until(lambda: last(out).get("processed_total") == 1, 30, lambda: f"the first job\n{worker.output()}")
    queue.enqueue(jobs.hang, 60)
    for i in range(3):
        queue.enqueue(jobs.ok, i)
    wait_until(lambda: horse_of(worker.pid) is not None, 10, "the work horse")
    horse = horse_of(worker.pid)
    assert horse is not None
    os.kill(horse, signal.SIGSTOP)
    try:
        wait_until(
            lambda: last(out).get("state") == "stalled", 20, lambda: f"a stalled verdict\n{lines(out)[-3:]}"
        )
        sample = last(out)
        assert (sample["busy"], sample["workers"], sample["depth"]) == (1, 1, 3)
    finally:
        os.kill(horse, signal.SIGKILL)


def test_a_simple_worker_is_counted_the_same_way(
    procs: Callable[..., Proc], redis_url: str, tmp_path: Path
) -> None:
    name, out = unique("rq-simple"), tmp_path / "ticks.jsonl"
    worker = start_worker(procs, redis_url, name, out, kind="rq-simple")
    queue = rq.Queue(name, connection=redis.Redis.from_url(redis_url))
    enqueue_mix(queue)
    wait_until(
        lambda: last(out).get("processed_total") == 12,
        60,
        lambda: f"12 jobs processed\n{worker.output()}\n{lines(out)[-2:]}",
    )
    sample = last(out)
    assert (sample["failed_total"], sample["rate_limited_total"]) == (6, 3)


def test_the_depth_is_the_length_of_the_rq_queue(redis_url: str) -> None:
    name = unique("rq-depth")
    connection = redis.Redis.from_url(redis_url)
    queue = rq.Queue(name, connection=connection)
    for i in range(4):
        queue.enqueue(jobs.ok, i)
    monitor = Monitor(interval=0.1)
    instrument(rq.SimpleWorker([queue], connection=connection), monitor=monitor)
    sample = monitor.tick()[name].sample
    assert (sample.depth, sample.workers, sample.busy) == (4, 1, 0)


def test_instrumenting_something_else_is_refused() -> None:
    with pytest.raises(TypeError, match="RQ worker"):
        instrument(object(), monitor=Monitor())  # type: ignore[type-var]


def test_the_worker_class_serves_its_counts_on_metrics(procs: Callable[..., Proc], redis_url: str) -> None:
    """`rq worker --worker-class qhealth.integrations.rq.Worker` exports what it counts
    (at QHEALTH_RQ_LISTEN, default 127.0.0.1:9808), not into a monitor nobody reads."""
    name, port = unique("rq-served"), free_port()
    worker = procs(
        [PYTHON, "-m", "rq.cli", "worker", "--worker-class", "qhealth.integrations.rq.Worker",
         "--url", redis_url, name],
        env={"QHEALTH_RQ_LISTEN": f"127.0.0.1:{port}"},
    )  # fmt: skip
    queue = rq.Queue(name, connection=redis.Redis.from_url(redis_url))
    queue.enqueue(jobs.ok, 1)
    queue.enqueue(jobs.fail)
    expected = [
        f'qhealth_items_processed_total{{outcome="{outcome}",queue="{name}"}} 1.0'
        for outcome in ("success", "error")
    ]
    wait_until(
        lambda: all(line in scrape(port) for line in expected), 30, lambda: f"{expected}\n{worker.output()}"
    )


def test_a_worker_whose_metrics_port_is_taken_still_runs_its_jobs(
    procs: Callable[..., Proc], redis_url: str
) -> None:
    import socket

    name = unique("rq-port-taken")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = procs(
            [PYTHON, "-m", "rq.cli", "worker", "--worker-class", "qhealth.integrations.rq.Worker",
             "--url", redis_url, "--burst", name],
            env={"QHEALTH_RQ_LISTEN": f"127.0.0.1:{port}"},
        )  # fmt: skip
        job = rq.Queue(name, connection=redis.Redis.from_url(redis_url)).enqueue(jobs.ok, 3)
        assert worker.popen.wait(60) == 0, worker.output()
    assert job.get_status(refresh=True) == "finished"
    assert f"cannot serve the RQ worker's metrics on 127.0.0.1:{port}" in worker.output()
    assert "QHEALTH_RQ_LISTEN" in worker.output()
