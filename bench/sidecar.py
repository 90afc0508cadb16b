"""What one ``qhealth watch`` tick over 10,000 Redis queues costs: the watch, and the broker.

A throwaway ``redis-server`` (started here, nothing saved) gets ``--queues``
queues of each kind, each holding a few items, as the frameworks themselves
lay them out:

* ``rq``: the queue list, a job hash per item, RQ's queue registry, and 10
  workers, each registered on 1,000 of the queues;
* ``celery``: the queue list and its three priority lists (one item each),
  plus 100 prefetched messages in kombu's ``unacked`` hash;
* ``arq``: the sorted set (one job held by a worker) and the health-check key;
* ``redis-list``: a list; ``redis-stream``: a stream and a consumer group.

For each kind, the queues are found by pattern (the way ``qhealth watch
--queue 'PREFIX-*'`` finds them) and read as one group, tick after tick (the
first, which warms up connections and loads the arq script, not counted). Per
tick it prints the wall time of the read (``read``), the round trips it took
(counted on the wire), and Redis's own CPU time for it (``used_cpu_user +
used_cpu_sys`` from ``INFO cpu`` before and after, less the same measure around
an empty tick, so that the two ``INFO`` calls do not count). Then a whole
monitor tick over the ``rq`` queues (read + sample + classify, as ``qhealth
watch`` runs it), for scale: classifying is the monitor's own cost, outside the
sidecar.

    python3 bench/sidecar.py [--queues 10000] [--ticks 7]

The last line is ``sidecar tick ms for 10000 queues: X``: the median read of
the ``rq`` queues, the heaviest reader (5 commands per queue in the first
round trip, then the workers' hashes and each head job's time).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
from _redis_server import start_redis

from qhealth import ClassifierConfig, Monitor
from qhealth.sidecar import Sidecar

KINDS = ("rq", "celery", "arq", "redis-list", "redis-stream")


class CountingConnection(redis.Connection):
    """Counts sends: a pipeline goes out in one send, so sends are round trips."""

    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sends += 1
        super().send_packed_command(command, check_health)


def fill(client: redis.Redis, kind: str, count: int) -> str:
    """``count`` queues of ``kind``, a few items each; the pattern that finds them."""
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        name = f"{kind}-{i:05d}"
        if kind == "rq":
            pipe.sadd("rq:queues", f"rq:queue:{name}")
            for j in range(3):
                pipe.rpush(f"rq:queue:{name}", f"{name}-{j}")
                pipe.hset(f"rq:job:{name}-{j}", "enqueued_at", "2026-01-01T00:00:00.000000Z")
            worker = f"rq:worker:w{i % 10}"
            pipe.sadd(f"rq:workers:{name}", worker)
            pipe.hset(worker, mapping={"successful_job_count": 5, "failed_job_count": 1, "queues": "many"})
        elif kind == "celery":
            pipe.sadd(f"_kombu.binding.{name}", f"{name}\x06\x16\x06\x16{name}")
            for suffix in ("", "\x06\x163", "\x06\x166", "\x06\x169"):
                pipe.rpush(name + suffix, '{"headers": {"id": "x"}}')
            if i < 100:
                message = f'[{{"headers": {{"id": "t{i}"}}}}, "", "{name}"]'
                pipe.hset("unacked", f"tag-{i}", message)
        elif kind == "arq":
            pipe.zadd(name, {f"{name}-{j}": (now - 10 + j) * 1000 for j in range(3)})
            pipe.set(f"arq:in-progress:{name}-0", 1)
            pipe.set(f"{name}:health-check", "Jan-01 j_complete=7 j_failed=1 j_retried=0 j_ongoing=1")
        elif kind == "redis-list":
            pipe.rpush(name, 1, 2, 3)
        else:
            for _ in range(3):
                pipe.xadd(name, {"n": 1})
            pipe.xgroup_create(name, "g", id="0")
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    return f"{kind}-*"


def redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def one_tick(sources: dict[str, Any]) -> None:
    for source in sources.values():  # what the monitor does: each queue reads; the first reads all
        source.read()


def bench_kind(port: int, kind: str, count: int, ticks: int) -> dict[str, float]:
    admin = redis.Redis(port=port)
    pattern = fill(admin, kind, count)
    client = redis.Redis.from_url(
        f"redis://127.0.0.1:{port}/0", decode_responses=True, connection_class=CountingConnection
    )
    sidecar = Sidecar(kind, f"redis://127.0.0.1:{port}/0", group="g" if kind == "redis-stream" else None,
                      client=client)  # fmt: skip
    t0 = time.perf_counter()
    names = sidecar.discover(pattern)
    find_ms = (time.perf_counter() - t0) * 1000
    sources = {name: sidecar.watch(name) for name in names}
    one_tick(sources)  # warm-up: connections, the arq script
    reads, trips, cpu = [], [], []
    for _ in range(ticks):
        before = redis_cpu_s(admin)
        idle = redis_cpu_s(admin) - before  # what an INFO costs, to take off
        CountingConnection.sends = 0
        before = redis_cpu_s(admin)
        t0 = time.perf_counter()
        one_tick(sources)
        reads.append((time.perf_counter() - t0) * 1000)
        cpu.append(max(0.0, (redis_cpu_s(admin) - before - idle) * 1000))
        trips.append(CountingConnection.sends)
    problems = {k: v for k, v in sidecar.group.problems.items()}
    if problems:
        sys.exit(f"{kind}: {len(problems)} queues not read, e.g. {next(iter(problems.items()))}")
    sidecar.group.close()
    admin.flushall()
    admin.close()
    return {
        "queues": len(names),
        "find_ms": find_ms,
        "read_ms": statistics.median(reads),
        "read_max_ms": max(reads),
        "round_trips": max(trips),
        "redis_cpu_ms": statistics.median(cpu),
    }


def bench_monitor(port: int, count: int, ticks: int) -> float:
    """Median ms of a whole monitor tick (read + sample + classify) over ``count`` RQ queues."""
    admin = redis.Redis(port=port)
    pattern = fill(admin, "rq", count)
    sidecar = Sidecar("rq", f"redis://127.0.0.1:{port}/0")
    monitor = Monitor(interval=1.0, config=ClassifierConfig())
    for name in sidecar.discover(pattern):
        monitor.watch_source(name, sidecar.watch(name))
    times = []
    for i in range(ticks + 1):
        t0 = time.perf_counter()
        monitor.tick(now=time.monotonic() + i)
        if i:
            times.append((time.perf_counter() - t0) * 1000)
    sidecar.group.close()
    admin.flushall()
    return statistics.median(times)


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--queues", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qhealth-bench-sidecar-") as directory:
        proc, port = start_redis(directory, log=True)
        try:
            try:
                import hiredis  # noqa: F401

                parser_used = "hiredis (C)"
            except ImportError:
                parser_used = "redis-py's own (pure Python; `pip install hiredis` reads faster)"
            print(f"{args.queues} queues per kind, {args.ticks} ticks each (medians)")
            print(f"reply parser: {parser_used}")
            print(f"{'kind':<13} {'queues':>7} {'find ms':>8} {'read ms':>8} {'max ms':>8} "
                  f"{'trips':>6} {'redis cpu ms':>13}")  # fmt: skip
            results = {}
            for kind in KINDS:
                r = results[kind] = bench_kind(port, kind, args.queues, args.ticks)
                print(
                    f"{kind:<13} {r['queues']:>7.0f} {r['find_ms']:>8.0f} {r['read_ms']:>8.1f} "
                    f"{r['read_max_ms']:>8.1f} {r['round_trips']:>6.0f} {r['redis_cpu_ms']:>13.1f}"
                )
            monitor_ms = bench_monitor(port, args.queues, args.ticks)
            print(f"monitor tick ms (read + sample + classify) for {args.queues} rq queues: {monitor_ms:.0f}")
            print(f"sidecar tick ms for {args.queues} queues: {results['rq']['read_ms']:.0f}")
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
