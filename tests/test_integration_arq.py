"""arq adapter and arq sidecar: a real arq worker on a throwaway Redis, in arq's own environment.

arq 0.28 needs redis-py < 6 and the main environment has Celery's redis-py >= 6.4,
so this file runs twice:

* in the main environment it holds one test, which builds ``.venv-arq`` (the
  project with its ``arq`` extra, plus pytest) when it is missing or stale and
  runs this same file there; it fails, with pip's or pytest's output, when
  the environment cannot be built or a test inside fails;
* inside that environment (``arq`` importable) it holds the real tests.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration_brokers import PYTHON, ROOT, Proc, procs, redis_url, unique, wait_until

__all__ = ["procs", "redis_url"]

pytestmark = pytest.mark.slow

INSIDE = importlib.util.find_spec("arq") is not None
VENV = ROOT / ".venv-arq"
#: The packages the arq environment gets besides the project's arq extra.
TEST_PACKAGES = ("pytest>=8", "pytest-asyncio>=0.23", "pytest-timeout>=2.3")
INNER_TESTS = 8


if not INSIDE:

    def _fingerprint() -> str:
        text = (ROOT / "pyproject.toml").read_text() + repr(TEST_PACKAGES) + sys.version
        return hashlib.sha256(text.encode()).hexdigest()

    def _build_venv() -> Path:
        python = VENV / "bin" / "python"
        stamp = VENV / ".qhealth-stamp"
        if python.exists() and stamp.exists() and stamp.read_text() == _fingerprint():
            return python
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(VENV)],
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "-e",
                f"{ROOT}[arq]",
                *TEST_PACKAGES,
            ],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=600, check=False)
            if done.returncode != 0:
                pytest.fail(
                    f"cannot build the arq test environment {VENV}: {' '.join(step[:4])} ... exited "
                    f"{done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
                )
        stamp.write_text(_fingerprint())
        return python

    def test_the_arq_suite_passes_in_its_own_environment() -> None:
        python = _build_venv()
        done = subprocess.run(
            [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-o", "addopts=", "-rA"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        output = done.stdout[-6000:] + done.stderr[-3000:]
        assert done.returncode == 0, f"the arq tests failed in {VENV}:\n{output}"
        assert f"{INNER_TESTS} passed" in done.stdout, f"expected {INNER_TESTS} tests to pass:\n{output}"

else:
    import redis
    from arq import create_pool
    from arq.connections import RedisSettings

    from qhealth import ClassifierConfig, Monitor
    from qhealth.brokers.arq_queue import ArqSource
    from qhealth.integrations.arq import instrument

    def lines(path: Path) -> list[dict[str, Any]]:
        if not path.exists():
            return []
        return [json.loads(t) for t in path.read_text().splitlines() if t.strip()]

    def last(path: Path) -> dict[str, Any]:
        seen = lines(path)
        return seen[-1] if seen else {}

    def start_worker(
        procs: Callable[..., Proc], url: str, queue: str, out: Path, jobs: int = 2, health_check_s: float = 1
    ) -> Proc:
        args = ["--url", url, "--queue", queue, "--out", str(out), "--concurrency", str(jobs)]
        args += ["--health-check-interval", str(health_check_s)]
        return procs([PYTHON, "-m", "tests.integration_workers", "arq", *args])

    async def enqueue(url: str, queue: str, *jobs: tuple[str, tuple[Any, ...]]) -> None:
        pool = await create_pool(RedisSettings.from_dsn(url), default_queue_name=queue)
        try:
            for name, args in jobs:
                await pool.enqueue_job(name, *args)
        finally:
            await pool.aclose()

    MIX = (
        *(("arq_ok", (i,)) for i in range(6)),
        *(("arq_fail", ()) for _ in range(3)),
        *(("arq_limited", ()) for _ in range(3)),
    )

    async def test_a_worker_counts_successes_failures_and_429s(
        procs: Callable[..., Proc], redis_url: str, tmp_path: Path
    ) -> None:
        queue, out = unique("arq"), tmp_path / "ticks.jsonl"
        worker = start_worker(procs, redis_url, queue, out)
        await enqueue(redis_url, queue, *MIX)
        wait_until(lambda: last(out).get("processed_total") == 12, 60, lambda: f"12 jobs\n{worker.output()}")
        sample = last(out)
        assert (sample["failed_total"], sample["rate_limited_total"], sample["attempts_total"]) == (6, 3, 12)
        assert (sample["workers"], sample["busy"], sample["depth"]) == (2, 0, 0)
        assert sample["enqueued_total"] is None

    async def test_a_worker_stuck_on_a_job_is_classified_stalled(
        procs: Callable[..., Proc], redis_url: str, tmp_path: Path
    ) -> None:
        queue, out = unique("arq-stall"), tmp_path / "ticks.jsonl"
        worker = start_worker(procs, redis_url, queue, out, jobs=1)
        await enqueue(redis_url, queue, ("arq_ok", (1,)))
        wait_until(
            lambda: last(out).get("processed_total") == 1, 30, lambda: f"the first job\n{worker.output()}"
        )
        await enqueue(redis_url, queue, ("arq_hang", (60,)))
        wait_until(lambda: last(out).get("busy") == 1, 30, "the hanging job to start")
        await enqueue(redis_url, queue, *(("arq_ok", (i,)) for i in range(3)))
        wait_until(lambda: last(out).get("state") == "stalled", 30, lambda: f"stalled\n{lines(out)[-3:]}")
        sample = last(out)
        assert (sample["busy"], sample["workers"], sample["depth"]) == (1, 1, 3)

    async def test_the_sidecar_reads_depth_busy_and_the_health_check(
        procs: Callable[..., Proc], redis_url: str, tmp_path: Path
    ) -> None:
        queue = unique("arq-side")
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        source = ArqSource(client, queue)
        assert source.read().processed_total is None  # no worker has written its counts yet
        worker = start_worker(procs, redis_url, queue, tmp_path / "ticks.jsonl")
        await enqueue(redis_url, queue, *MIX)
        wait_until(lambda: source.read().processed_total == 12, 30, lambda: f"12 jobs\n{worker.output()}")
        reading = source.read()
        assert (reading.failed_total, reading.depth, reading.busy, reading.workers) == (6, 0, 0, None)

    async def test_the_sidecar_sees_a_stopped_worker_as_stalled(
        procs: Callable[..., Proc], redis_url: str, tmp_path: Path
    ) -> None:
        queue = unique("arq-side-stall")
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        source = ArqSource(client, queue)
        worker = start_worker(procs, redis_url, queue, tmp_path / "ticks.jsonl")
        await enqueue(redis_url, queue, ("arq_ok", (1,)))
        wait_until(
            lambda: source.read().processed_total == 1, 30, lambda: f"the first job\n{worker.output()}"
        )
        worker.signal_group(signal.SIGSTOP)
        await enqueue(redis_url, queue, *(("arq_ok", (i,)) for i in range(3)))
        monitor = Monitor(interval=0.2, config=ClassifierConfig(window_s=1.6, min_window_intervals=2))
        monitor.watch_source(queue, source)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.2)
            monitor.tick()
            health = monitor.health(queue)
            if health is not None and health.state == "stalled":
                break
        health = monitor.health(queue)
        assert health is not None and health.state == "stalled", health
        snapshot = monitor.snapshot(queue)
        assert snapshot is not None and snapshot.sample.depth == 3

    async def test_the_sidecar_counts_every_job_of_a_worker_that_stopped(
        procs: Callable[..., Proc], redis_url: str, tmp_path: Path
    ) -> None:
        """arq writes its health-check key every health_check_interval (an hour by
        default) and deletes it when the worker stops: the instrumented worker
        writes its final counts there instead, so the last jobs are not lost."""
        queue, out = unique("arq-final"), tmp_path / "ticks.jsonl"
        source = ArqSource(redis.Redis.from_url(redis_url, decode_responses=True), queue)
        worker = start_worker(procs, redis_url, queue, out, health_check_s=3600)
        await enqueue(redis_url, queue, *(("arq_ok", (i,)) for i in range(14)), ("arq_fail", ()))
        wait_until(lambda: last(out).get("processed_total") == 15, 60, lambda: f"15 jobs\n{worker.output()}")
        before = source.read()
        # arq wrote its only record at its first poll: the worker's later jobs are not in it.
        assert before is not None and (before.processed_total or 0) < 15
        assert worker.stop() is not None  # SIGTERM: arq closes the worker
        after = source.read()
        assert after is not None and (after.processed_total, after.failed_total) == (15, 1)

    async def test_the_documented_snippet_instruments_a_worker_that_runs_jobs(redis_url: str) -> None:
        from arq.worker import create_worker

        from qhealth import default_monitor
        from tests.integration_brokers import readme_snippet

        page = "docs/instrument.md"
        code = readme_snippet("arq", page)
        assert "redis://localhost:6379/0" in code
        namespace: dict[str, Any] = {"__name__": "readme"}
        exec(compile(code.replace("redis://localhost:6379/0", redis_url), page, "exec"), namespace)
        settings = namespace["WorkerSettings"]
        assert settings.health_check_interval <= 10  # what `qhealth watch --kind arq` reads, kept fresh
        await enqueue(redis_url, "arq:queue", ("send_email", ("someone@example.com",)))
        worker = create_worker(settings, burst=True, poll_delay=0.01)
        try:
            await worker.async_run()
        finally:
            with warnings.catch_warnings():  # arq 0.28 calls redis-py's deprecated close() itself
                warnings.simplefilter("ignore", DeprecationWarning)
                await worker.close()
        time.sleep(0.002)
        sample = default_monitor().tick()["arq:queue"].sample
        assert (sample.processed_total, sample.failed_total) == (1, 0)
        assert sample.workers == 0  # the burst worker has shut down: its 10 job slots are gone

    def test_instrumenting_twice_changes_nothing() -> None:
        async def job(ctx: dict[str, Any]) -> None:
            pass

        settings: dict[str, Any] = {"functions": [job]}
        instrument(settings, monitor=Monitor())
        hook = settings["on_job_end"]
        instrument(settings, monitor=Monitor())
        assert settings["on_job_end"] is hook
        assert settings["functions"][0].__name__ == "job"

    def test_settings_without_functions_are_refused_by_name() -> None:
        with pytest.raises(ValueError, match="'functions'"):
            instrument({"functions": []}, monitor=Monitor())
