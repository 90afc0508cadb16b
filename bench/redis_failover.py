"""The Redis broker on a local Redis Cluster (3 masters, 3 replicas): what a
failover loses, and what durable puts cost.

Part 1, loss: each run starts a fresh cluster, runs a pool (10 workers) on
it while a producer puts ``--items`` items one ``put`` at a time, SIGKILLs the
master of the queue's slot a third of the way in, waits for its replica to
take over and for the killed node to come back as a replica, and counts the
puts that had returned but whose item was never processed. Default settings
(asynchronous replication) against ``replicas=1`` (each put followed by
``WAIT 1``), runs interleaved.

Part 2, cost: on one fresh cluster, ``--items`` puts one at a time and the
same in ``put_many`` batches, default and durable, timed (items/s).

    python3 bench/redis_failover.py [--items 3000] [--runs 5]

The last line is ``failover lost: default X of Y puts (N runs), durable X of Y``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from src_pool.redis_broker import RedisBroker  # noqa: E402
from tests.redis_cluster import LocalCluster, run_through_a_failover  # noqa: E402

MODES = {"default": {}, "durable (replicas=1)": {"replicas": 1}}


def loss_run(items: int, settings: dict[str, int]) -> tuple[int, int]:
    with tempfile.TemporaryDirectory(prefix="bench-redis-failover-") as tmp:
        cluster = LocalCluster(Path(tmp))
        try:
            return asyncio.run(run_through_a_failover(cluster, items, **settings))
        finally:
            cluster.stop()


async def put_rate(url: str, items: int, settings: dict[str, int], batched: bool) -> float:
    async with RedisBroker(url, f"cost-{uuid.uuid4().hex[:8]}", capacity=None, **settings) as broker:
        started = time.perf_counter()
        if batched:
            await broker.put_many(range(items))
        else:
            for i in range(items):
                await broker.put(i)
        return items / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    losses: dict[str, list[tuple[int, int]]] = {mode: [] for mode in MODES}
    for run in range(1, args.runs + 1):
        for mode, settings in MODES.items():
            confirmed, lost = loss_run(args.items, settings)
            losses[mode].append((confirmed, lost))
            print(
                f"  run {run} {mode}: {lost} of {confirmed} confirmed puts lost", file=sys.stderr, flush=True
            )

    rates: dict[tuple[str, bool], float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-redis-failover-") as tmp:
        cluster = LocalCluster(Path(tmp))
        try:
            for batched in (False, True):
                for mode, settings in MODES.items():
                    runs = [
                        asyncio.run(put_rate(cluster.url, args.items, settings, batched)) for _ in range(3)
                    ]
                    rates[(mode, batched)] = statistics.median(runs)
        finally:
            cluster.stop()

    print(f"\nPart 1: a master SIGKILLed a third of the way through {args.items} puts, {args.runs} runs each")
    print(f"{'mode':<22} {'lost per run':<24} {'lost in all':>12}")
    for mode, rows in losses.items():
        per_run = ", ".join(str(lost) for _, lost in rows)
        print(f"{mode:<22} {per_run:<24} {sum(lost for _, lost in rows):>5} of {sum(c for c, _ in rows)}")
    print(f"\nPart 2: put throughput on the cluster, {args.items} items, median of 3")
    print(f"{'mode':<22} {'one put per item':>17} {'put_many':>10}")
    for mode in MODES:
        print(f"{mode:<22} {rates[(mode, False)]:>17,.0f} {rates[(mode, True)]:>10,.0f}")
    default, durable = (losses[m] for m in MODES)
    print(
        f"failover lost: default {sum(lost for _, lost in default)} of {sum(c for c, _ in default)} puts "
        f"({args.runs} runs), durable {sum(lost for _, lost in durable)} of {sum(c for c, _ in durable)}"
    )


if __name__ == "__main__":
    main()
