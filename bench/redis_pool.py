"""The reference pool on Redis vs arq, RQ, Celery and Dramatiq: no-op jobs, end to end.

For each system: start its worker (one process, as its docs run it), then a
producer process enqueues ``--items`` no-op jobs the way that system's users
do, and the clock runs from the producer's first enqueue until the last job
has been processed. All on one throwaway ``redis-server`` started by the bench
(``--save "" --appendonly no``), one system at a time, a flushed database each.

"Processed" is counted the same way for everyone: the job increments a
counter in its worker process, and a reporter thread there copies it to Redis
every 20 ms. The systems, as configured here (each peer in its fastest
single-process set-up that we know of):

* qhealth: :class:`src_pool.pool.Pool` (10 workers, qhealth instrumentation
  on) on :class:`src_pool.redis_broker.RedisBroker` (reliable delivery on:
  processing list, heartbeat, acks; ``batch_size=100, prefetch=100``);
  producer ``put_many`` (500 items, at most 8 MiB, per round trip);
* qhealth-single: the same pool, with a producer that sends one ``put`` per
  item, as the peers below do (not in the summary line, which keeps the
  batched row);
* arq 0.28: ``Worker(max_jobs=10, poll_delay=0.01)`` (fast polling; its default
  is 0.5 s); producer ``enqueue_job`` per job. arq needs redis-py < 6, which
  the main environment cannot have (Celery's transport needs >= 6.4), so it
  runs from its own virtualenv::

      python3 -m venv /tmp/.venv-bench-arq && /tmp/.venv-bench-arq/bin/pip install arq

  (``--arq-python`` points elsewhere; without it arq is reported as not run);
* RQ 3: ``rq worker --worker-class rq.worker.SimpleWorker`` (no fork per
  job: the default ``Worker`` forks a child for every job and made 17 jobs/s
  here); producer ``enqueue_many`` (pipelined);
* Celery 5: ``celery worker --pool=solo`` (one process, like the others);
  producer ``.delay()`` per task, results ignored;
* Dramatiq 2: ``dramatiq --processes 1 --threads 8``; producer ``.send()``;
* naive (for scale, not in the summary): 10 asyncio consumers doing
  ``BLMOVE`` + ``LREM`` per item, the textbook reliable-queue loop.

    python3 bench/redis_pool.py [--items 20000] [--only qhealth,dramatiq] [--rounds 1]

The last line is ``redis items/s: qhealth X, arq Y, rq Z, celery W, dramatiq V``.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import redis
from _redis_server import start_redis

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ARQ_PYTHON = "/tmp/.venv-bench-arq/bin/python"
SYSTEMS = ("qhealth", "qhealth-single", "arq", "rq", "celery", "dramatiq", "naive")
PEERS = ("arq", "rq", "celery", "dramatiq")

REPORTER = """
import itertools, os, threading, time
import redis as _redis

DONE = [0]
_URL = os.environ["BENCH_REDIS_URL"]

def done_one():
    DONE[0] += 1

def _report():
    client = _redis.Redis.from_url(_URL)
    key = "bench:done:%d" % os.getpid()
    last = -1
    while True:
        n = DONE[0]
        if n != last:
            client.set(key, n)
            last = n
        time.sleep(0.02)

threading.Thread(target=_report, daemon=True).start()
"""

# One module per system, written to a temporary directory: the job, the
# worker's configuration, and the producer (``python -m bench_<system> produce N``).
MODULES = {
    "qhealth": """
import asyncio, os, sys, time
from bench_reporter import done_one
from src_pool.pool import Pool
from src_pool.redis_broker import RedisBroker

URL = os.environ["BENCH_REDIS_URL"]

async def noop(payload):
    done_one()

async def work():
    broker = RedisBroker(URL, "bench", batch_size=100, prefetch=100, capacity=None)
    async with Pool(noop, name="bench", broker=broker, concurrency=10):
        print("ready", flush=True)
        await asyncio.Event().wait()

async def produce(n):
    async with RedisBroker(URL, "bench", capacity=None) as broker:
        await broker.start()
        _redis_client().set("bench:t0", repr(time.time()))
        await broker.put_many(range(n))

async def produce_single(n):
    async with RedisBroker(URL, "bench", capacity=None) as broker:
        await broker.start()
        _redis_client().set("bench:t0", repr(time.time()))
        for i in range(n):
            await broker.put(i)

def _redis_client():
    import redis
    return redis.Redis.from_url(URL)

if __name__ == "__main__":
    verb = {"work": work, "produce": produce, "produce-single": produce_single}[sys.argv[1]]
    asyncio.run(verb() if sys.argv[1] == "work" else verb(int(sys.argv[2])))
""",
    "arq": """
import asyncio, os, sys, time
from urllib.parse import urlsplit
from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker
from bench_reporter import done_one

URL = os.environ["BENCH_REDIS_URL"]
_parts = urlsplit(URL)
SETTINGS = RedisSettings(host=_parts.hostname, port=_parts.port, database=int(_parts.path[1:] or 0))

async def noop(ctx):
    done_one()

def work():
    worker = Worker(functions=[noop], redis_settings=SETTINGS, max_jobs=10, poll_delay=0.01, keep_result=0)
    print("ready", flush=True)
    worker.run()

async def produce(n):
    pool = await create_pool(SETTINGS)
    await pool.set("bench:t0", repr(time.time()))
    for _ in range(n):
        await pool.enqueue_job("noop")

if __name__ == "__main__":
    work() if sys.argv[1] == "work" else asyncio.run(produce(int(sys.argv[2])))
""",
    "rq": """
import os, sys, time
import redis
from rq import Queue
from bench_reporter import done_one

URL = os.environ["BENCH_REDIS_URL"]

def noop():
    done_one()

def produce(n):
    connection = redis.Redis.from_url(URL)
    queue = Queue("bench", connection=connection)
    connection.set("bench:t0", repr(time.time()))
    for start in range(0, n, 1000):
        jobs = [Queue.prepare_data("bench_rq.noop", result_ttl=0) for _ in range(min(1000, n - start))]
        queue.enqueue_many(jobs)

if __name__ == "__main__":
    produce(int(sys.argv[2]))
""",
    "celery": """
import os, sys, time
import redis
from celery import Celery
from bench_reporter import done_one

URL = os.environ["BENCH_REDIS_URL"]
app = Celery("bench_celery", broker=URL)
app.conf.task_ignore_result = True
app.conf.worker_hijack_root_logger = False

@app.task
def noop():
    done_one()

def produce(n):
    redis.Redis.from_url(URL).set("bench:t0", repr(time.time()))
    for _ in range(n):
        noop.delay()

if __name__ == "__main__":
    produce(int(sys.argv[2]))
""",
    "dramatiq": """
import os, sys, time
import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from bench_reporter import done_one

URL = os.environ["BENCH_REDIS_URL"]
dramatiq.set_broker(RedisBroker(url=URL))

@dramatiq.actor(max_retries=0)
def noop():
    done_one()

def produce(n):
    redis.Redis.from_url(URL).set("bench:t0", repr(time.time()))
    for _ in range(n):
        noop.send()

if __name__ == "__main__":
    produce(int(sys.argv[2]))
""",
    "naive": """
import asyncio, os, sys, time
import redis.asyncio as aioredis
from bench_reporter import done_one

URL = os.environ["BENCH_REDIS_URL"]

async def consumer(i):
    client = aioredis.Redis.from_url(URL)
    processing = "naive:processing:%d:%d" % (os.getpid(), i)
    while True:
        item = await client.blmove("naive:queue", processing, 1.0, "LEFT", "RIGHT")
        if item is not None:
            done_one()
            await client.lrem(processing, 1, item)

async def work():
    print("ready", flush=True)
    await asyncio.gather(*(consumer(i) for i in range(10)))

async def produce(n):
    client = aioredis.Redis.from_url(URL)
    await client.set("bench:t0", repr(time.time()))
    for start in range(0, n, 1000):
        await client.rpush("naive:queue", *range(start, min(start + 1000, n)))

if __name__ == "__main__":
    asyncio.run(work() if sys.argv[1] == "work" else produce(int(sys.argv[2])))
""",
}


class Server:
    def __init__(self, directory: Path) -> None:
        self.proc, self.port = start_redis(directory)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis(port=self.port)

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(10)


#: Systems that run another system's module, and the producer verb they use.
SAME_WORKER = {"qhealth-single": ("qhealth", "produce-single")}


def worker_command(system: str, python: str) -> list[str]:
    system = SAME_WORKER.get(system, (system, ""))[0]
    if system in ("qhealth", "naive", "arq"):
        return [python, "-m", f"bench_{system}", "work"]
    if system == "rq":
        return [python, "-m", "rq.cli", "worker", "bench", "--url", "{url}", "--quiet",
                "--worker-class", "rq.worker.SimpleWorker"]  # fmt: skip
    if system == "celery":
        return [python, "-m", "celery", "-A", "bench_celery", "worker", "--pool=solo", "--loglevel=WARNING",
                "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip
    return [python, "-m", "dramatiq", "bench_dramatiq", "--processes", "1", "--threads", "8"]


def done_count(client: redis.Redis) -> int:
    keys = list(client.scan_iter("bench:done:*"))
    return sum(int(v) for v in client.mget(keys) if v is not None) if keys else 0


def run_one(
    system: str, server: Server, modules: Path, items: int, python: str, timeout: float
) -> float | None:
    server.client.flushdb()
    env = {**os.environ, "BENCH_REDIS_URL": server.url, "PYTHONPATH": f"{modules}{os.pathsep}{ROOT}"}
    log = tempfile.NamedTemporaryFile(prefix=f"bench-{system}-", suffix=".log", delete=False)  # noqa: SIM115
    command = [part.replace("{url}", server.url) for part in worker_command(system, python)]
    worker = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        time.sleep(2.0)  # let the worker connect and settle
        if worker.poll() is not None:
            print(f"  {system}: worker exited: {Path(log.name).read_text()[-1500:]}", file=sys.stderr)
            return None
        module, verb = SAME_WORKER.get(system, (system, "produce"))
        producer = subprocess.Popen([python, "-m", f"bench_{module}", verb, str(items)], env=env)
        deadline = time.monotonic() + timeout
        while (done := done_count(server.client)) < items:
            if time.monotonic() > deadline:
                print(f"  {system}: timed out with {done}/{items} processed", file=sys.stderr)
                return None
            if producer.poll() not in (None, 0):
                print(f"  {system}: producer failed", file=sys.stderr)
                return None
            time.sleep(0.01)
        finished = time.time()
        producer.wait(30)
        t0 = float(server.client.get("bench:t0") or finished)
        return items / (finished - t0)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        log.close()
        os.unlink(log.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--only", default=",".join(SYSTEMS), help="comma-separated: " + ",".join(SYSTEMS))
    parser.add_argument("--arq-python", default=DEFAULT_ARQ_PYTHON)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run before giving up")
    args = parser.parse_args()
    systems = [s for s in args.only.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {sorted(unknown)}")
    with tempfile.TemporaryDirectory(prefix="bench-redis-pool-") as tmp:
        modules = Path(tmp) / "modules"
        modules.mkdir()
        (modules / "bench_reporter.py").write_text(textwrap.dedent(REPORTER))
        for system, source in MODULES.items():
            (modules / f"bench_{system}.py").write_text(textwrap.dedent(source))
        server = Server(Path(tmp))
        results: dict[str, list[float]] = {}
        try:
            if "arq" in systems and not Path(args.arq_python).exists():
                print(
                    f"  arq: no interpreter at {args.arq_python} (see the docstring): not run",
                    file=sys.stderr,
                )
                systems.remove("arq")
            # Round by round, every system once per round: a change in the machine's
            # load then hits every system alike instead of the one running at the time.
            for round_ in range(1, args.rounds + 1):
                for system in systems:
                    python = args.arq_python if system == "arq" else sys.executable
                    rate = run_one(system, server, modules, args.items, python, args.timeout)
                    if rate is not None:
                        results.setdefault(system, []).append(rate)
                    print(f"  round {round_} {system}: {rate and round(rate)} items/s", file=sys.stderr)
        finally:
            server.stop()
    print_table(results, args.items)


def print_table(results: dict[str, list[float]], items: int) -> None:
    median: Callable[[str], float | None] = lambda s: statistics.median(results[s]) if s in results else None  # noqa: E731
    peers = [m for p in PEERS if (m := median(p)) is not None]
    fastest = max(peers) if peers else None
    print(f"\n{items} no-op jobs, enqueue to last processed, one local redis-server (median of rounds)\n")
    print(f"{'system':<14} {'items/s':>9} {'vs fastest peer':>16}")
    for system in SYSTEMS:
        value = median(system)
        if value is None:
            print(f"{system:<14} {'not run':>9}")
            continue
        ratio = f"{value / fastest:.2f}x" if fastest else "-"
        print(f"{system:<14} {value:>9.0f} {ratio:>16}")

    def fmt(system: str) -> str:
        value = median(system)
        return "n/a" if value is None else f"{value:.0f}"

    print(
        f"redis items/s: qhealth {fmt('qhealth')}, arq {fmt('arq')}, rq {fmt('rq')}, "
        f"celery {fmt('celery')}, dramatiq {fmt('dramatiq')}"
    )


if __name__ == "__main__":
    main()
