"""What each framework adapter costs: the same framework, plain vs instrumented, alternated.

For RQ (the default forking worker), Celery (threads pool, 4 threads) and arq
(max_jobs 10), each round starts a fresh worker process, warms it up with one
job, then times a batch of no-op jobs from the first enqueue until a last
sentinel job, run after all the others, sets a Redis key. Rounds alternate
plain and instrumented workers (instrumented: the adapter on the process-wide
default monitor, ticking every second, as a user would run it); the medians of
the throughputs are compared. The ``concurrent.futures`` ThreadPoolExecutor
row does the same in-process with no-op functions (a worst case: nothing to
hide the wrapper's cost behind).

Redis is a throwaway ``redis-server`` started here. arq cannot share an
environment with Celery's Redis transport: its row runs in ``.venv-arq``
(built by ``tests/test_integration_arq.py``), skipped with a note when that
environment is missing.

    python3 bench/adapters.py [--rounds 5] [--only rq,celery,arq,futures]

Two costs per row: wall-clock throughput (what a user sees, noisy on a shared
2-core machine) and the worker process's CPU time per job (user + system,
its reaped children included: RQ's work horses), which other load disturbs
far less. The last line is ``CPU overhead: rq +X.X%, celery +X.X%, ...``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ARQ_PYTHON = ROOT / ".venv-arq" / "bin" / "python"
BATCH = {"rq": 300, "celery": 3000, "arq": 3000}


# -- the jobs (imported by the workers as module `adapters`) --------------------------


def noop() -> None:
    return None


def done(url: str, key: str) -> None:
    import redis

    redis.Redis.from_url(url).set(key, "1")


async def arq_noop(ctx: dict[str, Any]) -> None:
    return None


async def arq_done(ctx: dict[str, Any], key: str) -> None:
    await ctx["redis"].set(key, "1")


# -- workers -----------------------------------------------------------------------------


def run_worker(framework: str, url: str, queue: str, instrumented: bool) -> None:
    if framework == "rq":
        import redis
        import rq

        worker = rq.Worker([queue], connection=redis.Redis.from_url(url))
        if instrumented:
            from qhealth.integrations.rq import instrument

            instrument(worker)
        worker.work(logging_level="ERROR")
    elif framework == "celery":
        from celery import Celery

        app = Celery("bench", broker=url, set_as_current=True)
        app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False)
        app.task(name="bench.noop")(noop)
        app.task(name="bench.done")(done)
        if instrumented:
            from qhealth.integrations.celery import instrument as instrument_celery

            instrument_celery(app)
        argv = ["worker", "-P", "threads", "-c", "4", "-Q", queue, "--loglevel", "ERROR"]
        app.worker_main([*argv, "--without-gossip", "--without-mingle", "--without-heartbeat"])
    elif framework == "arq":
        from arq.connections import RedisSettings
        from arq.worker import run_worker as arq_run

        settings: dict[str, Any] = {
            "functions": [arq_noop, arq_done],
            "redis_settings": RedisSettings.from_dsn(url),
            "queue_name": queue,
            "max_jobs": 10,
            "poll_delay": 0.01,
            "keep_result": 0,
        }
        if instrumented:
            from qhealth.integrations.arq import instrument as instrument_arq

            instrument_arq(settings)
        arq_run(settings)


# -- producers -------------------------------------------------------------------------------


def enqueue(framework: str, url: str, queue: str, n: int, key: str) -> None:
    if framework == "rq":
        import adapters as jobs  # the functions under their importable name, not __main__'s
        import redis
        import rq

        q = rq.Queue(queue, connection=redis.Redis.from_url(url))
        with q.connection.pipeline() as pipe:
            for _ in range(n):
                q.enqueue(jobs.noop, pipeline=pipe, result_ttl=0)
            pipe.execute()
        q.enqueue(jobs.done, url, key, result_ttl=0)
    elif framework == "celery":
        from celery import Celery

        app = Celery("bench-producer", broker=url, set_as_current=False)
        with app.producer_or_acquire() as producer:
            for _ in range(n):
                app.send_task("bench.noop", queue=queue, producer=producer)
            app.send_task("bench.done", (url, key), queue=queue, producer=producer)
        app.close()
    else:
        subprocess.run(
            [str(ARQ_PYTHON), str(HERE / "adapters.py"), "arq-enqueue", url, queue, str(n), key],
            check=True,
            cwd=HERE,
        )


def arq_enqueue(url: str, queue: str, n: int, key: str) -> None:
    import asyncio

    from arq import create_pool
    from arq.connections import RedisSettings

    async def go() -> None:
        pool = await create_pool(RedisSettings.from_dsn(url), default_queue_name=queue)
        for _ in range(n):
            await pool.enqueue_job("arq_noop")
        # arq runs up to max_jobs at once: the sentinel waits for an empty queue to be last
        while await pool.zcard(queue) > 0:
            await asyncio.sleep(0.001)
        await pool.enqueue_job("arq_done", key)
        await pool.aclose()

    asyncio.run(go())


# -- one round ---------------------------------------------------------------------------


def _wait_key(client: Any, key: str, timeout: float = 300.0) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if client.exists(key):
            return time.perf_counter()
        time.sleep(0.002)
    raise TimeoutError(f"the sentinel job never ran (key {key})")


def _cpu_s(pid: int) -> float:
    """CPU seconds of a process and of the children it has reaped (RQ's horses)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


def one_round(framework: str, url: str, instrumented: bool, n: int, round_no: int) -> tuple[float, float]:
    """(jobs per second, worker CPU µs per job) of one fresh worker on ``n`` no-op jobs."""
    import redis

    client = redis.Redis.from_url(url)
    queue = f"bench-{framework}-{round_no}-{int(instrumented)}"
    python = str(ARQ_PYTHON) if framework == "arq" else sys.executable
    args = [python, str(HERE / "adapters.py"), "worker", framework, url, queue]
    worker = subprocess.Popen(
        [*args, "1" if instrumented else "0"],
        cwd=HERE,
        env={**os.environ, "PYTHONPATH": f"{HERE}:{ROOT}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        enqueue(framework, url, queue, 1, f"{queue}:warm")
        _wait_key(client, f"{queue}:warm", timeout=60)
        time.sleep(0.2)  # let the warm-up horse be reaped
        cpu0, t0 = _cpu_s(worker.pid), time.perf_counter()
        enqueue(framework, url, queue, n, f"{queue}:done")
        t1 = _wait_key(client, f"{queue}:done")
        time.sleep(0.2)
        cpu1 = _cpu_s(worker.pid)
        return (n + 1) / (t1 - t0), (cpu1 - cpu0) / (n + 1) * 1e6
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def futures_round(instrumented: bool, n: int) -> tuple[float, float]:
    pool = ThreadPoolExecutor(max_workers=4)
    if instrumented:
        from qhealth.integrations.futures import instrument

        instrument(pool, f"bench-futures-{time.monotonic_ns()}")
    pool.submit(noop).result()
    t0, cpu0 = time.perf_counter(), time.process_time()
    futures = [pool.submit(noop) for _ in range(n)]
    wait(futures)
    rate = n / (time.perf_counter() - t0)
    cpu = (time.process_time() - cpu0) / n * 1e6
    pool.shutdown()
    return rate, cpu


def measure(name: str, rounds: int, run: Callable[[bool, int], tuple[float, float]]) -> float:
    """Print one row; return the CPU overhead in percent."""
    plain: list[tuple[float, float]] = []
    instrumented: list[tuple[float, float]] = []
    for i in range(rounds):
        for flag in (False, True) if i % 2 == 0 else (True, False):
            (instrumented if flag else plain).append(run(flag, i))
    rate_p = statistics.median(r for r, _ in plain)
    rate_q = statistics.median(r for r, _ in instrumented)
    cpu_p = statistics.median(c for _, c in plain)
    cpu_q = statistics.median(c for _, c in instrumented)
    cpu_overhead = (cpu_q / cpu_p - 1) * 100
    print(
        f"{name:<8} {rate_p:>10,.0f} {rate_q:>10,.0f} {(rate_p / rate_q - 1) * 100:>+8.1f}%"
        f" {cpu_p:>10,.0f} {cpu_q:>10,.0f} {cpu_overhead:>+8.1f}%",
        flush=True,
    )
    return cpu_overhead


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        framework, url, queue, flag = sys.argv[2:6]
        run_worker(framework, url, queue, flag == "1")
        return
    if len(sys.argv) > 1 and sys.argv[1] == "arq-enqueue":
        url, queue, n, key = sys.argv[2:6]
        arq_enqueue(url, queue, int(n), key)
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds per variant (default 5)")
    parser.add_argument("--only", default="rq,celery,arq,futures", help="frameworks, comma-separated")
    parser.add_argument("--futures-items", type=int, default=100_000)
    args = parser.parse_args()
    wanted = [f.strip() for f in args.only.split(",") if f.strip()]

    from _redis_server import start_redis  # here: the workers import this module as `adapters`

    tmp = tempfile.mkdtemp(prefix="qhealth-bench-")
    server, port = start_redis(tmp)
    url = f"redis://127.0.0.1:{port}/0"
    results: dict[str, float] = {}
    print(f"{args.rounds} rounds per variant, alternated; medians")
    print(f"{'':<8} {'jobs/s (wall clock)':^31} {'worker CPU µs per job':^31}")
    print(f"{'adapter':<8} {'plain':>10} {'instr.':>10} {'cost':>9} {'plain':>10} {'instr.':>10} {'cost':>9}")
    try:
        for name in wanted:
            if name == "futures":
                results[name] = measure(
                    name, args.rounds, lambda flag, _i: futures_round(flag, args.futures_items)
                )
            elif name == "arq" and not ARQ_PYTHON.exists():
                why = f"{ARQ_PYTHON} is missing (pytest tests/test_integration_arq.py builds it)"
                print(f"{name:<8} not measured: {why}")
                continue
            else:
                results[name] = measure(
                    name,
                    args.rounds,
                    lambda flag, i, name=name: one_round(name, url, flag, BATCH[name], i),  # type: ignore[misc]
                )
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    print("CPU overhead: " + ", ".join(f"{name} {value:+.1f}%" for name, value in results.items()))


if __name__ == "__main__":
    main()
