"""The reference pool on RabbitMQ vs Celery on the same RabbitMQ: no-op jobs, end to end.

For each system: start its worker (one worker process, as its docs run it)
and wait until it is consuming, then the bench enqueues ``--items`` no-op
jobs the way that system's users do, and the clock runs from the first
enqueue until the worker has processed the last job. Both run on the
machine's RabbitMQ (127.0.0.1:5672, guest/guest), one system at a time, each
on queues of its own that are deleted afterwards.

"Processed" is counted the same way for both: the job appends one byte to a
file (one ``write``), and the bench polls the file's size. The systems:

* qhealth: :class:`src_pool.Pool` (``--concurrency`` asyncio workers, 20 by
  default, qhealth instrumentation on through the default monitor) on
  :class:`src_pool.rabbit_broker.RabbitBroker` with its defaults: durable
  queue, persistent messages, manual acks (batched), prefetch = concurrency;
  producer ``put_many`` (every publish confirmed by RabbitMQ);
* Celery 5 with acks on (``task_acks_late=True``), results ignored, in three
  set-ups: ``--pool=solo``; ``--pool=threads -c 10``; ``--pool=prefork -c 2``
  (the machine's cores); everything else Celery's defaults (prefetch
  multiplier 4, gossip, mingle, heartbeats: turning the last three off made
  the solo pool *slower* here, 50 jobs/s); producer ``send_task`` per job
  (Celery's default: no publisher confirms).

Reported per system: the median over ``--rounds`` of end-to-end items/s and
of the worker's CPU time per job (user + system of the worker's whole
process group, from /proc). The machine is shared: the CPU figure moves far
less than the wall clock.

    python3 bench/rabbitmq_pool.py [--items 20000] [--rounds 3] [--only qhealth,celery-threads]
                                   [--concurrency 20] [--prefetch N]

The last line is ``rabbitmq items/s: qhealth X, celery Y`` (Y: Celery's best set-up).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

URL = "amqp://guest:guest@127.0.0.1:5672/"
SYSTEMS = ("qhealth", "celery-solo", "celery-threads", "celery-prefork")

QHEALTH_WORKER = """
import asyncio, os, signal, sys
from src_pool import Pool
from src_pool.rabbit_broker import RabbitBroker

url, queue, count_file, ready_file, concurrency, prefetch = sys.argv[1:7]
concurrency = int(concurrency)
prefetch = int(prefetch) if prefetch != "default" else None
fd = os.open(count_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

async def noop(item):
    os.write(fd, b"x")

async def main():
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with RabbitBroker(url, queue, concurrency=concurrency, prefetch=prefetch, capacity=None) as broker:
        async with Pool(noop, broker=broker, concurrency=concurrency, name=queue):
            await asyncio.sleep(0.5)  # the workers' first fetch starts the consumer
            open(ready_file, "w").close()
            await stop.wait()

asyncio.run(main())
"""

CELERY_APP = """
import os
from celery import Celery
from celery.signals import worker_ready

app = Celery("qhbench", broker=os.environ["BENCH_AMQP_URL"])
app.conf.update(
    task_acks_late=True,
    task_ignore_result=True,
    task_default_queue=os.environ["BENCH_QUEUE"],
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
_fd = []

@app.task(name="qhbench.noop")
def noop(item):
    if not _fd:  # per process: prefork children open their own
        _fd.append(os.open(os.environ["BENCH_COUNT_FILE"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
    os.write(_fd[0], b"x")

@worker_ready.connect
def _ready(**kwargs):
    open(os.environ["BENCH_READY_FILE"], "w").close()
"""

CELERY_POOLS = {
    "celery-solo": ["--pool=solo"],
    "celery-threads": ["--pool=threads", "--concurrency=10"],
    "celery-prefork": ["--pool=prefork", "--concurrency=2"],
}


@dataclass(frozen=True)
class Result:
    publish_s: float
    total_s: float
    items_per_s: float
    cpu_us_per_item: float


def group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of every live process in a process group."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 (pgrp), counted after the command name
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.002)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def run_one(system: str, items: int, concurrency: int, prefetch: int | None, tmp: Path) -> Result:
    queue = f"bench-{system}-{uuid.uuid4().hex[:8]}"
    count_file = tmp / f"{queue}.count"
    ready_file = tmp / f"{queue}.ready"
    log = (tmp / f"{queue}.log").open("wb")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{tmp}"}
    if system == "qhealth":
        script = tmp / "qhbench_worker.py"
        script.write_text(QHEALTH_WORKER)
        args = [sys.executable, str(script), URL, queue, str(count_file), str(ready_file), str(concurrency),
                "default" if prefetch is None else str(prefetch)]  # fmt: skip
    else:
        (tmp / "qhbench_celery.py").write_text(CELERY_APP)
        env.update(
            BENCH_AMQP_URL=URL,
            BENCH_QUEUE=queue,
            BENCH_COUNT_FILE=str(count_file),
            BENCH_READY_FILE=str(ready_file),
        )
        args = [sys.executable, "-m", "celery", "-A", "qhbench_celery", "worker", "--loglevel=WARNING",
                "-Q", queue,
                *CELERY_POOLS[system]]  # fmt: skip
    proc = subprocess.Popen(
        args, env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_for(ready_file.exists, 60, "the worker to be ready", proc)
        time.sleep(0.5)
        cpu_before = group_cpu_s(proc.pid)
        started = time.perf_counter()
        if system == "qhealth":
            asyncio.run(produce_qhealth(queue, items))
        else:
            produce_celery(queue, items)
        published = time.perf_counter() - started
        wait_for(lambda: count_file.stat().st_size >= items, 600, f"{items} jobs", proc)
        total = time.perf_counter() - started
        cpu = group_cpu_s(proc.pid) - cpu_before
    finally:
        stop(proc)
        log.close()
        asyncio.run(cleanup(system, queue))
    return Result(published, total, items / total, cpu / items * 1e6)


async def produce_qhealth(queue: str, items: int) -> None:
    from src_pool.rabbit_broker import RabbitBroker

    async with RabbitBroker(URL, queue, capacity=None) as broker:
        await broker.put_many(range(items))


def produce_celery(queue: str, items: int) -> None:
    from celery import Celery

    app = Celery("qhbench-producer", broker=URL)
    app.conf.update(task_ignore_result=True, task_default_queue=queue)
    try:
        for i in range(items):
            app.send_task("qhbench.noop", args=(i,), queue=queue)
    finally:
        app.close()


async def cleanup(system: str, queue: str) -> None:
    import aio_pika

    from src_pool.rabbit_broker import RabbitBroker

    if system == "qhealth":
        await RabbitBroker(URL, queue).delete()
        return
    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(queue)
        await channel.exchange_delete(queue)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=20, help="the qhealth pool's workers")
    parser.add_argument(
        "--prefetch", type=int, default=None, help="the qhealth broker's prefetch (default: concurrency)"
    )
    parser.add_argument("--only", default=",".join(SYSTEMS), help="comma-separated: " + ", ".join(SYSTEMS))
    opts = parser.parse_args()
    systems = [s for s in opts.only.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")

    results: dict[str, list[Result]] = {s: [] for s in systems}
    with tempfile.TemporaryDirectory(prefix="qhealth-bench-rabbitmq-") as tmp:
        for round_ in range(opts.rounds):
            for system in systems:  # one round of every system, then the next: the noise spreads evenly
                result = run_one(system, opts.items, opts.concurrency, opts.prefetch, Path(tmp))
                results[system].append(result)
                print(
                    f"round {round_ + 1} {system}: {result.items_per_s:,.0f} items/s "
                    f"({result.total_s:.2f} s, published in {result.publish_s:.2f} s), "
                    f"worker CPU {result.cpu_us_per_item:,.0f} µs/item",
                    flush=True,
                )

    print()
    print(f"{opts.items:,} no-op jobs, {opts.rounds} rounds, medians")
    print(f"{'system':<16} {'items/s':>9} {'end to end s':>13} {'publish s':>10} {'worker CPU µs/item':>19}")
    medians: dict[str, float] = {}
    for system, runs in results.items():
        medians[system] = statistics.median(r.items_per_s for r in runs)
        print(
            f"{system:<16} {medians[system]:>9,.0f} {statistics.median(r.total_s for r in runs):>13.2f} "
            f"{statistics.median(r.publish_s for r in runs):>10.2f} "
            f"{statistics.median(r.cpu_us_per_item for r in runs):>19,.0f}"
        )
    celery = {s: v for s, v in medians.items() if s.startswith("celery")}
    best = max(celery, key=lambda s: celery[s]) if celery else None
    qhealth = f"{medians['qhealth']:.0f}" if "qhealth" in medians else "not run"
    peer = f"{celery[best]:.0f}" if best else "not run"
    if best:
        print(f"celery's best set-up here: {best}")
    print(f"rabbitmq items/s: qhealth {qhealth}, celery {peer}")


if __name__ == "__main__":
    main()
