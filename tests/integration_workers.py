"""Worker processes for the integration tests, each writing what its monitor sees.

``python -m tests.integration_workers KIND --url URL --queue Q --out FILE``
starts a real worker of KIND (``rq``, ``rq-simple``, ``celery``, ``arq``), instrumented with
qhealth on a monitor with a short interval and window, that appends one JSON
line per tick to FILE: the sample, the state and the conditions. The tests
read FILE while they drive the worker (enqueue jobs, stop the process).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from pathlib import Path
from typing import Any

from qhealth import ClassifierConfig, Listener, Monitor, QueueSnapshot


class JsonLines(Listener):
    """One JSON object per tick and queue, flushed at once."""

    def __init__(self, path: str) -> None:
        self._file = Path(path).open("a", encoding="utf-8")  # noqa: SIM115
        self._lock = threading.Lock()

    def on_tick(self, snapshot: QueueSnapshot) -> None:
        line = {
            "pid": os.getpid(),
            "queue": snapshot.queue,
            **snapshot.sample.to_dict(),
            "state": snapshot.health.state,
            "conditions": sorted(str(c) for c in snapshot.health.conditions),
        }
        with self._lock:
            self._file.write(json.dumps(line) + "\n")
            self._file.flush()


def make_monitor(out: str, interval: float, window: float) -> Monitor:
    monitor = Monitor(interval=interval, config=ClassifierConfig(window_s=window, min_window_intervals=2))
    monitor.add_listener(JsonLines(out))
    return monitor


def run_rq(args: argparse.Namespace, simple: bool) -> None:
    import redis
    import rq

    from qhealth.integrations.rq import instrument

    connection = redis.Redis.from_url(args.url)
    monitor = make_monitor(args.out, args.interval, args.window)
    cls: Any = rq.SimpleWorker if simple else rq.Worker
    worker = instrument(cls([args.queue], connection=connection), monitor=monitor)
    monitor.start()
    worker.work(with_scheduler=False, logging_level="WARNING")


def run_celery(args: argparse.Namespace) -> None:
    os.environ["QHEALTH_TEST_BROKER"] = args.url
    from qhealth.integrations.celery import instrument
    from tests.integration_celery_app import app

    monitor = make_monitor(args.out, args.interval, args.window)
    instrument(app, monitor=monitor)
    app.conf.worker_prefetch_multiplier = args.prefetch
    argv = ["worker", "-P", args.pool, "-c", str(args.concurrency), "-Q", args.queue, "--loglevel", "WARNING"]
    app.worker_main([*argv, "--without-gossip", "--without-mingle", "-n", f"w-{os.getpid()}@%h"])


def run_arq(args: argparse.Namespace) -> None:
    from arq.connections import RedisSettings
    from arq.worker import run_worker

    from qhealth.integrations.arq import instrument
    from tests import integration_jobs as jobs

    settings: dict[str, Any] = {
        "functions": [jobs.arq_ok, jobs.arq_fail, jobs.arq_limited, jobs.arq_hang],
        "redis_settings": RedisSettings.from_dsn(args.url),
        "queue_name": args.queue,
        "max_jobs": args.concurrency,
        "poll_delay": 0.05,
        "health_check_interval": args.health_check_interval,  # what `qhealth watch --kind arq` reads
    }
    instrument(settings, monitor=make_monitor(args.out, args.interval, args.window))
    run_worker(settings)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=("rq", "rq-simple", "celery", "arq"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--pool", default="threads")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--prefetch", type=int, default=1, help="Celery's worker_prefetch_multiplier")
    parser.add_argument("--health-check-interval", type=float, default=1.0, help="arq only")
    args = parser.parse_args()
    if args.kind == "celery":
        run_celery(args)
    elif args.kind == "arq":
        run_arq(args)
    else:
        run_rq(args, simple=args.kind == "rq-simple")


if __name__ == "__main__":
    main()
