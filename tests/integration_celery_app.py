"""The Celery app the integration tests run real workers of.

Its broker comes from ``QHEALTH_TEST_BROKER``. Workers prefetch one message
and acknowledge late, so the broker's queue length is the whole backlog.
"""

from __future__ import annotations

import os
import time

from celery import Celery

from tests.integration_jobs import TooManyRequests

app = Celery("qhealth-tests", broker=os.environ.get("QHEALTH_TEST_BROKER", "memory://"))
app.conf.update(
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    worker_send_task_events=os.environ.get("QHEALTH_TEST_EVENTS") == "1",
)


@app.task(name="t.ok")
def ok(x: int = 0) -> int:
    return x


@app.task(name="t.fail")
def fail() -> None:
    raise ValueError("this item is bad")


@app.task(name="t.limited")
def limited() -> None:
    raise TooManyRequests()


@app.task(name="t.retry_429", bind=True, max_retries=1, default_retry_delay=0)
def retry_429(self: object) -> None:
    try:
        raise TooManyRequests()
    except TooManyRequests as exc:
        raise self.retry(exc=exc) from exc  # type: ignore[attr-defined]


@app.task(name="t.hang")
def hang(seconds: float = 60.0) -> None:
    time.sleep(seconds)
