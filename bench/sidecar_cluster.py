"""What one ``qhealth watch`` tick costs on a Redis Cluster: many queues spread over 3 masters.

A throwaway local cluster (3 masters, 3 replicas: ``tests/redis_cluster.py``)
gets ``--queues`` queues of each kind the sidecar reads on a cluster (``rq``,
``celery``, ``redis-list``, ``redis-stream``; arq does not run on a cluster),
laid out as in ``bench/sidecar.py``: their keys hash to slots on every master.
The queues are found by pattern (a ``SCAN`` of every master, or RQ's registry)
and read as one group, tick after tick, the first not counted. Per tick it
prints the wall time of the read and the writes each master got (one write is
one pipeline: the commands of one round for that master), against the same
queues on one ``redis-server`` for comparison.

    python3 bench/sidecar_cluster.py [--queues 10000] [--ticks 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import redis  # noqa: E402
from _redis_server import start_redis  # noqa: E402
from sidecar import fill, one_tick  # noqa: E402

from qhealth.sidecar import Sidecar  # noqa: E402
from tests.redis_cluster import LocalCluster  # noqa: E402

KINDS = ("rq", "celery", "redis-list", "redis-stream")


class CountingConnection(redis.Connection):
    """Counts writes per node: each round's commands for one node go out in one write."""

    sends: ClassVar[Counter[int]] = Counter()

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sends[int(self.port)] += 1
        super().send_packed_command(command, check_health)


def counting(client: Any) -> Any:
    """Make every pool of ``client`` (a node's, or the one server's) count its writes."""
    pools = (
        [client.get_redis_connection(n).connection_pool for n in client.get_nodes()]
        if isinstance(client, redis.RedisCluster)
        else [client.connection_pool]
    )
    for pool in pools:
        pool.connection_class = CountingConnection
        pool.reset()
    return client


def bench(url: str, client: Any, admin: Any, kind: str, count: int, ticks: int) -> dict[str, float]:
    pattern = fill(admin, kind, count)
    sidecar = Sidecar(kind, url, group="g" if kind == "redis-stream" else None, client=counting(client))
    t0 = time.perf_counter()
    names = sidecar.discover(pattern)
    find_ms = (time.perf_counter() - t0) * 1000
    sources = {name: sidecar.watch(name) for name in names}
    one_tick(sources)  # warm-up: a connection to each node
    reads, writes = [], []
    for _ in range(ticks):
        CountingConnection.sends.clear()
        t0 = time.perf_counter()
        one_tick(sources)
        reads.append((time.perf_counter() - t0) * 1000)
        writes.append(max(CountingConnection.sends.values()))
        nodes = len(CountingConnection.sends)
    if sidecar.group.problems:
        sys.exit(
            f"{kind}: {len(sidecar.group.problems)} queues not read, e.g. "
            f"{next(iter(sidecar.group.problems.items()))}"
        )
    sidecar.group.close()
    admin.flushall()  # on a cluster: every master
    return {
        "queues": len(names),
        "find_ms": find_ms,
        "read_ms": statistics.median(reads),
        "read_max_ms": max(reads),
        "nodes": nodes,
        "writes": max(writes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queues", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=7)
    args = parser.parse_args()
    print(f"{args.queues} queues per kind, {args.ticks} ticks each (medians)")
    print(f"{'where':<8} {'kind':<13} {'queues':>7} {'find ms':>8} {'read ms':>8} {'max ms':>8} "
          f"{'nodes':>6} {'writes/node':>12}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="qhealth-bench-sidecar-cluster-") as directory:
        cluster = LocalCluster(Path(directory) / "cluster")
        proc, port = start_redis(directory, log=True)
        try:
            plain_url = f"redis://127.0.0.1:{port}/0"
            for kind in KINDS:
                for where, url, client, admin in (
                    ("cluster", cluster.url, _cluster(cluster, True), _cluster(cluster, False)),
                    (
                        "one",
                        plain_url,
                        redis.Redis.from_url(plain_url, decode_responses=True),
                        redis.Redis(port=port),
                    ),
                ):
                    r = bench(url, client, admin, kind, args.queues, args.ticks)
                    timing = f"{r['find_ms']:>8.0f} {r['read_ms']:>8.1f} {r['read_max_ms']:>8.1f}"
                    print(
                        f"{where:<8} {kind:<13} {r['queues']:>7.0f} {timing} "
                        f"{r['nodes']:>6.0f} {r['writes']:>12.0f}"
                    )
        finally:
            proc.terminate()
            proc.wait(10)
            cluster.stop()


def _cluster(cluster: LocalCluster, decode: bool) -> redis.RedisCluster:
    port = next(p for p in cluster.ports if p in cluster.procs)
    return redis.RedisCluster(host="127.0.0.1", port=port, decode_responses=decode)


if __name__ == "__main__":
    main()
