"""docs/instrument.md's snippets and docs/sidecar.md's watch command, run as written (URLs and ports
pointed at throwaway ones).

The arq snippet runs in arq's own environment, in ``tests/test_integration_arq.py``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import rq

from qhealth import Monitor
from tests import integration_jobs as jobs
from tests.integration_brokers import (
    PYTHON,
    Proc,
    console_command,
    free_port,
    procs,
    readme_snippet,
    redis_url,
    scrape,
    unique,
    wait_until,
)

__all__ = ["procs", "redis_url"]

PAGE_URL = "redis://localhost:6379/0"
PAGE_LISTEN = "127.0.0.1:9808"
INSTRUMENT = "docs/instrument.md"


def run_snippet(code: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "readme"}
    exec(compile(code, INSTRUMENT, "exec"), namespace)
    return namespace


def tick(monitor: Monitor, queue: str) -> Any:
    time.sleep(0.002)
    return monitor.tick()[queue].sample


def test_the_futures_snippet_counts_its_items() -> None:
    ns = run_snippet(readme_snippet("futures", INSTRUMENT))
    monitor: Monitor = ns["monitor"]
    try:
        assert ns["sizes"] == [1, 2, 3]
        sample = tick(monitor, "thumbnails")
        assert (sample.processed_total, sample.workers, sample.depth) == (3, 8, 0)
    finally:
        ns["pool"].shutdown()
        monitor.stop()


def test_the_worker_loop_snippet_counts_items_and_polls() -> None:
    ns = run_snippet(readme_snippet("loop", INSTRUMENT))
    monitor: Monitor = ns["monitor"]
    try:
        snapshot = monitor.tick()["webhooks"]
        assert (snapshot.sample.processed_total, snapshot.sample.busy, snapshot.polls_hit_total) == (3, 0, 3)
    finally:
        monitor.stop()


@pytest.mark.slow
def test_the_rq_snippet_instruments_a_worker_that_runs_jobs(redis_url: str) -> None:
    code = readme_snippet("rq", INSTRUMENT)
    assert PAGE_URL in code
    queue = rq.Queue("emails", connection=redis.Redis.from_url(redis_url))
    queue.empty()
    for i in range(2):
        queue.enqueue(jobs.ok, i)
    queue.enqueue(jobs.limited)
    ns = run_snippet(code.replace(PAGE_URL, redis_url))
    monitor: Monitor = ns["monitor"]
    try:
        ns["worker"].work(burst=True, logging_level="ERROR")
        sample = tick(monitor, "emails")
        assert (sample.processed_total, sample.failed_total, sample.rate_limited_total) == (3, 1, 1)
    finally:
        monitor.stop()


@pytest.mark.slow
def test_the_rq_worker_class_command_runs_jobs(redis_url: str, tmp_path: Path) -> None:
    command = console_command(readme_snippet("rq-worker", INSTRUMENT))
    name = unique("emails")
    command[-1] = name
    queue = rq.Queue(name, connection=redis.Redis.from_url(redis_url))
    job = queue.enqueue(jobs.ok, 7)
    done = subprocess.run(
        [shutil.which(command[0]) or command[0], *command[1:], "--url", redis_url, "--burst"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(jobs.__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr
    assert job.get_status(refresh=True) == "finished"


@pytest.mark.slow
def test_the_celery_snippet_serves_a_worker_s_counts(
    procs: Callable[..., Proc], redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    code = readme_snippet("celery", INSTRUMENT)
    assert PAGE_URL in code and PAGE_LISTEN in code
    (tmp_path / "mail.py").write_text(
        code.replace(PAGE_URL, redis_url).replace(PAGE_LISTEN, f"127.0.0.1:{port}")
    )
    command = console_command(readme_snippet("celery-worker", INSTRUMENT))
    assert command[:3] == ["celery", "-A", "mail"]
    worker = procs([PYTHON, "-m", "celery", *command[1:]], cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    from celery import Celery

    producer = Celery("producer", broker=redis_url, set_as_current=False)
    try:
        producer.send_task("mail.send_email", ("someone@example.com",))
        expected = 'qhealth_items_processed_total{outcome="success",queue="celery"} 1.0'
        wait_until(lambda: expected in scrape(port), 30, lambda: f"{expected}\n{worker.output()[-3000:]}")
        assert 'qhealth_workers{queue="celery"} 8.0' in scrape(port)
    finally:
        producer.close()


@pytest.mark.slow
def test_the_watch_command_serves_an_rq_queue(procs: Callable[..., Proc], redis_url: str) -> None:
    command = console_command(readme_snippet("watch", "docs/sidecar.md"))
    port = free_port()
    args = [a.replace(PAGE_URL, redis_url).replace(PAGE_LISTEN, f"127.0.0.1:{port}") for a in command[1:]]
    name = unique("emails")
    args[args.index("emails")] = name
    rq.Queue(name, connection=redis.Redis.from_url(redis_url)).enqueue(jobs.ok, 1)
    sidecar = procs([PYTHON, "-m", "qhealth", *args, "--interval", "0.2", "--duration", "20"])
    expected = f'qhealth_queue_depth{{queue="{name}"}} 1.0'
    wait_until(lambda: expected in scrape(port), 15, lambda: f"{expected}\n{sidecar.output()}")
    assert f'qhealth_workers{{queue="{name}"}} 0.0' in scrape(port)  # RQ lists its workers: none yet
