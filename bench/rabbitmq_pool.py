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
  :class:`src_pool.rabbit_broker.RabbitBroker` with its defaults: a durable
  quorum queue (deliveries counted, poison items dead-lettered), persistent
  messages, manual acks (batched), prefetch = concurrency; producer
  ``put_many`` (every publish confirmed by RabbitMQ);
* qhealth-classic: the same on a classic queue (``queue_type="classic"``:
  ten priority levels, no delivery count);
* Celery 5 with acks on (``task_acks_late=True``), results ignored, in three
  set-ups: ``--pool=solo``; ``--pool=threads -c 10``; ``--pool=prefork -c 2``
  (the machine's cores); everything else Celery's defaults (prefetch
  multiplier 4, gossip, mingle, heartbeats: turning the last three off made
  the solo pool *slower* here, 50 jobs/s); producer ``send_task`` per job
  (Celery's default: no publisher confirms).

Each round measures every system twice: end to end as above, and *drain*:
the queue is filled first, then the worker starts, and the clock runs from
its first processed job to its last (the consumer alone, whatever the
producer costs). Reported per system: medians over ``--rounds`` of items/s
and of the worker's CPU time per job (user + system of the worker's whole
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
SYSTEMS = ("qhealth", "qhealth-classic", "celery-solo", "celery-threads", "celery-prefork")
#: The queue type of each qhealth system.
QUEUE_TYPES = {"qhealth": "quorum", "qhealth-classic": "classic"}

QHEALTH_WORKER = """
import asyncio, os, signal, sys
from src_pool import Pool
from src_pool.rabbit_broker import RabbitBroker

url, queue, count_file, ready_file, concurrency, prefetch, queue_type = sys.argv[1:8]
concurrency = int(concurrency)
prefetch = int(prefetch) if prefetch != "default" else None
fd = os.open(count_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

async def noop(item):
    os.write(fd, b"x")

async def main():
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with RabbitBroker(
        url, queue, concurrency=concurrency, prefetch=prefetch, capacity=None, queue_type=queue_type
    ) as broker:
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
    """End to end: from the first enqueue until the last job was processed."""
    cpu_us_per_item: float
    drain_per_s: float
    """Drain: the queue filled first, then the worker started; first to last job processed."""
    drain_cpu_us_per_item: float


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


class Worker:
    """One system's worker process, counting processed jobs in a file."""

    def __init__(self, system: str, queue: str, concurrency: int, prefetch: int | None, tmp: Path) -> None:
        self.count_file = tmp / f"{queue}.count"
        ready_file = tmp / f"{queue}.ready"
        self._log = (tmp / f"{queue}.log").open("wb")
        env = {**os.environ, "PYTHONPATH": f"{ROOT}:{tmp}"}
        if system in QUEUE_TYPES:
            script = tmp / "qhbench_worker.py"
            script.write_text(QHEALTH_WORKER)
            args = [sys.executable, str(script), URL, queue, str(self.count_file), str(ready_file),
                    str(concurrency), "default" if prefetch is None else str(prefetch),
                    QUEUE_TYPES[system]]  # fmt: skip
        else:
            (tmp / "qhbench_celery.py").write_text(CELERY_APP)
            env.update(
                BENCH_AMQP_URL=URL,
                BENCH_QUEUE=queue,
                BENCH_COUNT_FILE=str(self.count_file),
                BENCH_READY_FILE=str(ready_file),
            )
            args = [sys.executable, "-m", "celery", "-A", "qhbench_celery", "worker", "--loglevel=WARNING",
                    "-Q", queue, "-n", f"{queue}@%h", *CELERY_POOLS[system]]  # fmt: skip
        self.proc = subprocess.Popen(
            args, env=env, cwd=tmp, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.ready_file = ready_file

    def processed(self) -> int:
        return self.count_file.stat().st_size if self.count_file.exists() else 0

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            wait_for(predicate, timeout, what, self.proc)
        except RuntimeError as exc:
            self._log.flush()
            tail = Path(self._log.name).read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{exc}; the worker's output:\n{tail}") from None

    def cpu_s(self) -> float:
        return group_cpu_s(self.proc.pid)

    def stop(self) -> None:
        stop(self.proc)
        self._log.close()


def produce(system: str, queue: str, items: int) -> None:
    if system in QUEUE_TYPES:
        asyncio.run(produce_qhealth(queue, items, QUEUE_TYPES[system]))
    else:
        produce_celery(queue, items)


def run_one(system: str, items: int, concurrency: int, prefetch: int | None, tmp: Path) -> Result:
    # End to end: the worker waits, then the producer starts the clock.
    queue = f"bench-{system}-{uuid.uuid4().hex[:8]}"
    worker = Worker(system, queue, concurrency, prefetch, tmp)
    try:
        worker.wait_for(worker.ready_file.exists, 60, "the worker to be ready")
        time.sleep(0.5)
        cpu_before = worker.cpu_s()
        started = time.perf_counter()
        produce(system, queue, items)
        published = time.perf_counter() - started
        worker.wait_for(lambda: worker.processed() >= items, 600, f"{items} jobs")
        total = time.perf_counter() - started
        cpu = worker.cpu_s() - cpu_before
    finally:
        worker.stop()
        asyncio.run(cleanup(system, queue))
    # Drain: the queue holds every job before the worker starts; first job to last.
    queue = f"bench-{system}-{uuid.uuid4().hex[:8]}"
    produce(system, queue, items)
    worker = Worker(system, queue, concurrency, prefetch, tmp)
    try:
        worker.wait_for(lambda: worker.processed() > 0, 60, "the first job")
        first, drain_cpu_before = time.perf_counter(), worker.cpu_s()
        worker.wait_for(lambda: worker.processed() >= items, 600, f"{items} jobs")
        drain_s = time.perf_counter() - first
        drain_cpu = worker.cpu_s() - drain_cpu_before
    finally:
        worker.stop()
        asyncio.run(cleanup(system, queue))
    return Result(
        published,
        total,
        items / total,
        cpu / items * 1e6,
        (items - 1) / drain_s,
        drain_cpu / (items - 1) * 1e6,
    )


async def produce_qhealth(queue: str, items: int, queue_type: str) -> None:
    from src_pool.rabbit_broker import RabbitBroker

    async with RabbitBroker(URL, queue, capacity=None, queue_type=queue_type) as broker:
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

    if system in QUEUE_TYPES:
        await RabbitBroker(URL, queue).delete()
        return
    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(queue)
        await channel.exchange_delete(queue)


def median(runs: list[Result], field: str) -> float:
    return statistics.median(getattr(r, field) for r in runs)


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
                    f"round {round_ + 1} {system}: end to end {result.items_per_s:,.0f} items/s "
                    f"({result.total_s:.2f} s, published in {result.publish_s:.2f} s, "
                    f"worker CPU {result.cpu_us_per_item:,.0f} µs/item); "
                    f"drain {result.drain_per_s:,.0f} items/s "
                    f"(worker CPU {result.drain_cpu_us_per_item:,.0f} µs/item)",
                    flush=True,
                )

    print()
    print(f"{opts.items:,} no-op jobs, {opts.rounds} rounds, medians")
    print(
        f"{'system':<16} {'items/s':>9} {'end to end s':>13} {'publish s':>10} {'CPU µs/item':>12}"
        f" {'drain items/s':>14} {'drain CPU µs/item':>18}"
    )
    medians: dict[str, float] = {}
    for system, runs in results.items():
        medians[system] = median(runs, "items_per_s")
        print(
            f"{system:<16} {medians[system]:>9,.0f} {median(runs, 'total_s'):>13.2f}"
            f" {median(runs, 'publish_s'):>10.2f} {median(runs, 'cpu_us_per_item'):>12,.0f}"
            f" {median(runs, 'drain_per_s'):>14,.0f} {median(runs, 'drain_cpu_us_per_item'):>18,.0f}"
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
