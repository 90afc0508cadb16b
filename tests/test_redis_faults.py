"""Fault tests: the reference pool on Redis loses nothing when worker
processes are SIGKILLed, redis-server restarts, and connections are dropped.

Workers are real processes (:mod:`tests.redis_worker`) running
:class:`src_pool.pool.Pool` on :class:`src_pool.redis_broker.RedisBroker`;
every processed item is counted in a Redis hash, so duplicates (allowed: the
delivery is at least once) are counted and reported, and a lost item shows up
as a missing field.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from src_pool.redis_broker import RedisBroker
from tests.redis_procs import Proc, procs
from tests.redis_server import RedisServer, redis_factory, redis_server, unique_name

__all__ = ["procs", "redis_factory", "redis_server"]  # fixtures used by this module

ROOT = Path(__file__).resolve().parent.parent


def hash_of(server: RedisServer, key: str) -> dict[str, int] | None:
    """The hash, or None while the server cannot answer (restarting)."""
    client = redis.Redis(host="127.0.0.1", port=server.port, password=server.password, socket_timeout=5)
    try:
        return {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in client.hgetall(key).items()}
    except redis.ConnectionError:
        return None
    finally:
        client.close()


def wait_for(predicate: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s: {what()}")
        time.sleep(0.05)


def put_all(url: str, queue: str, payloads: list[int]) -> None:
    async def put() -> None:
        async with RedisBroker(url, queue) as broker:
            await broker.put_many(payloads)

    asyncio.run(put())


def queue_counts(url: str, queue: str) -> tuple[int, int, int, int]:
    async def read() -> tuple[int, int, int, int]:
        async with RedisBroker(url, queue) as broker:
            c = await broker.counts()
            return c.waiting, c.delayed, c.in_flight, c.dead

    return asyncio.run(read())


@pytest.mark.slow
def test_sigkill_of_a_worker_process_in_the_middle_of_items_loses_none(
    redis_server: RedisServer, procs: Callable[..., Proc]
) -> None:
    """seed: at-most-once (SIGKILL of a 5-worker process lost 5 of 10 items)."""
    queue, results = unique_name("kill"), unique_name("results")
    victim = procs("work", redis_server.url, queue, results, "--concurrency", "5",
                   "--work-ms", "3000", "3000", "--visibility", "1.0")  # fmt: skip
    victim.wait_ready()
    put_all(redis_server.url, queue, list(range(10)))
    wait_for(
        lambda: len(hash_of(redis_server, f"{results}:started") or {}) == 5,
        10,
        lambda: f"5 items started, got {hash_of(redis_server, f'{results}:started')}",
    )
    victim.kill()
    assert hash_of(redis_server, results) == {}  # killed in the middle of all five
    survivor = procs("work", redis_server.url, queue, results, "--concurrency", "5",
                     "--work-ms", "1", "2", "--visibility", "1.0")  # fmt: skip
    survivor.wait_ready()
    wait_for(
        lambda: len(hash_of(redis_server, results) or {}) == 10,
        15,
        lambda: f"all 10 processed, got {hash_of(redis_server, results)}",
    )
    processed = hash_of(redis_server, results)
    started = hash_of(redis_server, f"{results}:started")
    assert processed == {str(i): 1 for i in range(10)}
    assert (
        started is not None and sorted(started.values()) == [1] * 5 + [2] * 5
    )  # the five interrupted, again
    assert queue_counts(redis_server.url, queue) == (0, 0, 0, 0)


@pytest.mark.slow
def test_ten_thousand_items_through_kills_restarts_and_dropped_connections_lose_none(
    redis_factory: Callable[..., RedisServer],
    procs: Callable[..., Proc],
    record_property: Callable[..., None],
) -> None:
    """Three worker processes and a producer; meanwhile, at random moments:
    SIGKILL a worker (a new one replaces it), restart redis-server (append-only
    file on: once shut down cleanly, once SIGKILLed), drop every client
    connection. Every item is processed at least
    once; duplicates are counted and reported; none is lost or dead-lettered."""
    count = 10_000
    server = redis_factory(appendonly=True)
    queue, results = unique_name("chaos"), unique_name("results")
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))

    def worker() -> Proc:
        return procs("work", server.url, queue, results, "--concurrency", "10", "--work-ms", "2", "10",
                     "--visibility", "1.5")  # fmt: skip

    workers = [worker() for _ in range(3)]
    for w in workers:
        w.wait_ready()
    producer = procs("produce", server.url, queue, str(count), "--chunk", "50", "--pause-ms", "20")
    faults = ["kill"] * 4 + ["client-kill"] * 4 + ["restart", "crash"]
    rng.shuffle(faults)
    done_faults: list[str] = []
    for fault in faults:
        time.sleep(rng.uniform(0.3, 0.9))
        if fault == "kill":
            victim = workers.pop(rng.randrange(len(workers)))
            victim.kill()
            workers.append(worker())
        elif fault in ("restart", "crash"):
            server.restart(down_s=rng.uniform(0.1, 0.5), crash=fault == "crash")
        else:
            server.command("CLIENT", "KILL", "TYPE", "normal")
        done_faults.append(fault)

    def progress() -> str:
        seen = hash_of(server, results) or {}
        return (
            f"{len(seen)} of {count} processed after faults {done_faults}; producer exit "
            f"{producer.popen.poll()}; queue (waiting, delayed, in flight, dead) "
            f"{queue_counts(server.url, queue)}\nproducer: {producer.output()[-1500:]}"
        )

    wait_for(lambda: len(hash_of(server, results) or {}) >= count, 90, progress)
    assert producer.popen.wait(30) == 0, producer.output()[-2000:]
    processed = hash_of(server, results)
    assert processed is not None
    assert set(processed) == {str(i) for i in range(count)}, "an item was lost"
    duplicates = sum(processed.values()) - count
    record_property("duplicates", duplicates)
    print(f"\n{count} items, faults {done_faults}: 0 lost, {duplicates} processed more than once")
    waiting, delayed, _in_flight, dead = queue_counts(server.url, queue)
    assert (waiting, delayed, dead) == (0, 0, 0)
