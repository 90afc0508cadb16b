"""A consumer process killed with SIGKILL in the middle of 5,000 items loses none,
on a quorum queue (the default) and on a classic one.

The worker is a real pool on the RabbitMQ broker in a process of its own
(this file run as a script). Its handler appends the item to a log file with
one ``write`` before returning, so an item the pool acknowledged is in the
log, and an item logged but not yet acknowledged when the process died comes
back to the restarted worker and is logged twice: a duplicate, which
at-least-once allows and the test counts. Without a RabbitMQ on
127.0.0.1:5672 the test fails with the command that starts it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration_brokers import PYTHON, Proc, amqp_url, procs, unique

__all__ = ["amqp_url", "procs"]  # fixtures used by this module

ITEMS = 5000
CONCURRENCY = 20
KILL_AFTER = 1000


def logged(path: Path) -> list[int]:
    text = path.read_text() if path.exists() else ""
    return [int(line) for line in text.splitlines() if line]


def wait_for(predicate: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what()}")
        time.sleep(0.005)


@pytest.mark.slow
@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_a_consumer_killed_mid_run_and_restarted_loses_no_item(
    amqp_url: str,
    procs: Callable[..., Proc],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
    queue_type: str,
) -> None:
    from src_pool.rabbit_broker import RabbitBroker

    queue = unique("fault")
    log = tmp_path / "processed.log"

    async def produce() -> None:
        async with RabbitBroker(amqp_url, queue, capacity=None, queue_type=queue_type) as producer:
            await producer.put_many(range(ITEMS))

    async def counts() -> tuple[int, int, int]:
        async with RabbitBroker(amqp_url, queue, queue_type=queue_type) as reader:
            c = await reader.counts()
            return c.waiting, c.delayed, c.dead

    async def delete() -> None:
        await RabbitBroker(amqp_url, queue).delete()

    worker = [PYTHON, __file__, amqp_url, queue, str(log), queue_type]
    try:
        asyncio.run(produce())
        first = procs(worker)
        wait_for(
            lambda: len(logged(log)) >= KILL_AFTER, 60, lambda: f"the first worker to start: {first.output()}"
        )
        first.signal_group(signal.SIGKILL)
        first.popen.wait(10)
        at_kill = len(logged(log))
        assert at_kill < ITEMS, "the worker finished before it was killed: the test proves nothing"

        second = procs(worker)
        wait_for(
            lambda: set(logged(log)) >= set(range(ITEMS)),
            60,
            lambda: f"every item: {ITEMS - len(set(logged(log)))} missing; {second.output()}",
        )
        assert second.stop() == 0, second.output()
        processed = logged(log)
        left = asyncio.run(counts())
    finally:
        asyncio.run(delete())

    times = Counter(processed)
    lost = [i for i in range(ITEMS) if i not in times]
    duplicates = sum(n - 1 for n in times.values())
    record_property("duplicates", duplicates)
    print(f"\nSIGKILL after {at_kill} of {ITEMS} items: lost {len(lost)}, duplicates {duplicates}")
    assert lost == []
    assert set(times) == set(range(ITEMS))
    # Only what the killed worker held unacknowledged can come back twice: at most its prefetch.
    assert duplicates <= CONCURRENCY
    assert left == (0, 0, 0)


def run_worker(url: str, queue: str, log: str, queue_type: str) -> None:
    """The worker process: a pool on RabbitMQ that logs every item it processes."""
    from src_pool import Pool
    from src_pool.rabbit_broker import RabbitBroker

    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    async def handle(item: int) -> None:
        await asyncio.sleep(0.01)  # some work, so that items are in flight when the process dies
        os.write(fd, f"{item}\n".encode())

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with (
            RabbitBroker(url, queue, concurrency=CONCURRENCY, queue_type=queue_type) as broker,
            Pool(handle, broker=broker, concurrency=CONCURRENCY, name=queue),
        ):
            await stop.wait()

    asyncio.run(main())


if __name__ == "__main__":
    run_worker(*sys.argv[1:5])
