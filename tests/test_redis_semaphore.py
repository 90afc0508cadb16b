"""The concurrency cap shared through Redis (leases, a line, wake-up lists) against a real redis-server.

"In the call" is measured on the server: a gauge incremented as a call
starts and decremented as it ends, with its highest value recorded in the
same script, so calls from several processes are counted on one clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from src_pool import MemoryBroker, Pool
from src_pool.redis_connect import RedisUnavailable
from src_pool.redis_semaphore import RedisSemaphore
from tests.readme import run_example, snippet
from tests.redis_server import RedisServer, free_port, redis_factory, redis_server, unique_name

__all__ = ["redis_factory", "redis_server"]  # fixtures used by this module

ROOT = Path(__file__).resolve().parent.parent

Make = Callable[..., RedisSemaphore]


@pytest.fixture
async def semaphores(redis_server: RedisServer) -> AsyncIterator[Make]:
    """Semaphores on the session's server, closed however the test ends.
    Each one is a separate instance: another process, as far as Redis can tell."""
    made: list[RedisSemaphore] = []

    def make(name: str, limit: int, lease_s: float = 10.0, url: str | None = None) -> RedisSemaphore:
        made.append(RedisSemaphore(url or redis_server.url, name, limit, lease_s=lease_s))
        return made[-1]

    yield make
    for sem in made:
        await sem.aclose()


@pytest.fixture
async def watcher(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def wait_until(check: Callable[[], Any], timeout: float = 5.0) -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` seconds. (A deadline, not
    ``asyncio.timeout``: a cancellation that a client library swallows mid-command
    would turn that into a wait without end.)"""
    deadline = time.monotonic() + timeout
    while not await asyncio.wait_for(check(), timeout):
        assert time.monotonic() < deadline, f"not within {timeout} s: {check}"
        await asyncio.sleep(0.005)


# -- the seed defect: two processes, "a cap of 3" -------------------------------------------

CALLER = textwrap.dedent(
    """
    import asyncio, json, sys, time
    import redis.asyncio as aioredis
    from src_pool import Pool
    from src_pool.redis_semaphore import RedisSemaphore

    ENTER = '''
    local n = redis.call('INCR', KEYS[1])
    if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
    return n
    '''

    async def main(url, name, kind):
        gauge = aioredis.Redis.from_url(url)
        enter = gauge.register_script(ENTER)
        keys = [name + ":in-call", name + ":max"]
        cap = RedisSemaphore(url, name, limit=3) if kind == "redis" else asyncio.Semaphore(3)
        stamps = []

        async def call(item):
            await enter(keys=keys)
            stamps.append(time.time())
            await asyncio.sleep(0.02)
            await gauge.decr(keys[0])

        print("ready", flush=True)
        sys.stdin.readline()
        async with Pool(call, name="caller", concurrency=8, semaphore=cap, monitor=False) as pool:
            await pool.submit_many(range(30))
            await pool.join()
        if kind == "redis":
            await cap.aclose()
        await gauge.aclose()
        print(json.dumps([min(stamps), max(stamps), len(stamps)]), flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
    """
)


def run_two_callers(url: str, name: str, kind: str) -> tuple[int, list[list[float]]]:
    """Two processes, 8 workers each, 30 calls each behind a cap of 3: the
    highest number of calls in progress at once, and each process's span."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CALLER, url, name, kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for _ in range(2)
    ]
    try:
        for proc in procs:  # both started: then go together
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert all(p.returncode == 0 for p in procs), outputs
    spans = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    return int(most_in_call(url, name)), spans


def most_in_call(url: str, name: str) -> bytes:
    client = redis.Redis.from_url(url)
    try:
        value = client.get(name + ":max")
        assert isinstance(value, bytes), "no call was made"
        return value
    finally:
        client.close()


def overlap(spans: list[list[float]]) -> float:
    (a0, a1, _), (b0, b1, _) = spans
    return min(a1, b1) - max(a0, b0)


@pytest.mark.slow
def test_two_processes_sharing_a_cap_of_3_never_make_more_than_3_calls_at_once(
    redis_server: RedisServer,
) -> None:
    """seed: the semaphore caps concurrency per process only: two processes
    made 6 concurrent calls against a "cap of 3"."""
    most, spans = run_two_callers(redis_server.url, unique_name("sem"), "redis")
    assert most <= 3, f"{most} calls in progress at once against a shared cap of 3"
    assert most == 3, f"at most {most} calls at once: the cap of 3 was never used in full"
    assert [n for _, _, n in spans] == [30, 30]
    assert overlap(spans) > 0.1, f"the two processes did not run at the same time: {spans}"


@pytest.mark.slow
def test_the_gauge_sees_the_seed_defect_with_a_per_process_semaphore(redis_server: RedisServer) -> None:
    """The same two processes with asyncio.Semaphore(3) each: the measurement
    that the test above passes catches a cap that is per process."""
    most, spans = run_two_callers(redis_server.url, unique_name("sem"), "local")
    assert overlap(spans) > 0.05, f"the two processes did not run at the same time: {spans}"
    assert most > 3, f"only {most} calls at once: the gauge would not catch a per-process cap"


# -- a holder that dies ----------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from src_pool.redis_semaphore import RedisSemaphore

    async def main(url, name):
        sem = RedisSemaphore(url, name, limit=1, lease_s=1.0)
        await sem.acquire()
        print("holding", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.mark.slow
async def test_a_sigkilled_holders_slot_comes_back_when_its_lease_ends(semaphores: Make) -> None:
    name = unique_name("sem")
    sem = semaphores(name, 1, lease_s=1.0)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, sem._url, name],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout is not None
        line = await asyncio.to_thread(holder.stdout.readline)
        assert line.strip() == "holding"
        # Alive, it renews: its slot stays taken well past one lease.
        with pytest.raises(TimeoutError):
            await sem.acquire(timeout=1.6)
        holder.send_signal(signal.SIGKILL)
        holder.wait(5)
        killed = time.monotonic()
        await sem.acquire(timeout=5.0)
        waited = time.monotonic() - killed
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    # Renewed every lease/3, so the lease ends 2/3 to 1 lease after the kill:
    # not before (the holder might only be slow), and the waiter takes it on time.
    assert 0.5 <= waited <= 1.0 + 0.35, f"the slot came back {waited:.2f} s after the kill, lease 1 s"


# -- timeouts, cancellation, the line ---------------------------------------------------------


async def test_acquire_raises_timeout_error_when_no_slot_frees_in_time(
    semaphores: Make, watcher: aioredis.Redis
) -> None:
    name = unique_name("sem")
    a, b = semaphores(name, 1), semaphores(name, 1)
    await a.acquire()
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"no slot within 0.3 s"):
        await b.acquire(timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 1.0
    assert await watcher.zcard(f"{b.prefix}:line") == 0, "a waiter that gave up left its place in line"
    assert b.held == 0


async def test_timeout_zero_asks_once_and_leaves_nothing_behind(
    semaphores: Make, watcher: aioredis.Redis
) -> None:
    name = unique_name("sem")
    a, b = semaphores(name, 1), semaphores(name, 1)
    assert isinstance(await b.acquire(timeout=0), str)
    with pytest.raises(TimeoutError):
        await a.acquire(timeout=0)
    assert await watcher.zcard(f"{a.prefix}:line") == 0
    assert await watcher.zcard(f"{a.prefix}:holders") == 1


async def test_a_cancelled_waiter_leaves_the_line_and_does_not_hold_up_the_next(
    semaphores: Make, watcher: aioredis.Redis
) -> None:
    name = unique_name("sem")
    a, b, c = semaphores(name, 1), semaphores(name, 1), semaphores(name, 1)
    holder = await a.acquire()
    line = f"{a.prefix}:line"
    cancelled = asyncio.create_task(b.acquire())
    await wait_until(lambda: _is(watcher.zcard(line), 1))
    cancelled.cancel()
    done, _ = await asyncio.wait({cancelled}, timeout=5)
    assert done, "the cancelled acquire went on waiting"
    await wait_until(lambda: _is(watcher.zcard(line), 0))  # given back in the background, at once
    waiter = asyncio.create_task(c.acquire())
    await wait_until(lambda: _is(watcher.zcard(line), 1))
    await a.release(holder)
    async with asyncio.timeout(1.0):  # not after b's place in line would have expired (10 s)
        await waiter
    assert b.held == 0


async def _is(value: Any, expected: object) -> bool:
    return bool(await value == expected)


async def test_waiters_of_several_processes_are_served_in_the_order_they_came(
    semaphores: Make, watcher: aioredis.Redis
) -> None:
    name = unique_name("sem")
    first = semaphores(name, 1)
    waiters = [semaphores(name, 1) for _ in range(4)]
    line = f"{first.prefix}:line"
    order: list[int] = []

    async def take(i: int) -> None:
        async with waiters[i]:
            order.append(i)

    holder = await first.acquire()
    tasks = []
    for i in range(len(waiters)):
        tasks.append(asyncio.create_task(take(i)))
        await wait_until(lambda n=i + 1: _is(watcher.zcard(line), n))  # in line before the next comes
    await first.release(holder)
    async with asyncio.timeout(5):
        await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]


@pytest.mark.slow
async def test_a_freed_slot_goes_to_the_process_that_waited_not_to_a_newcomer(
    semaphores: Make, watcher: aioredis.Redis
) -> None:
    name = unique_name("sem")
    sem, newcomer = semaphores(name, 1, lease_s=1.0), semaphores(name, 1, lease_s=1.0)
    holder = await sem.acquire()
    waiter = subprocess.Popen(  # waits in line, then prints "holding"
        [sys.executable, "-c", HOLDER, sem._url, name],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        await wait_until(lambda: _is(watcher.zcard(f"{sem.prefix}:line"), 1), timeout=20)
        waiter.send_signal(signal.SIGSTOP)  # slow to wake: it cannot answer the release yet
        await sem.release(holder)
        with pytest.raises(TimeoutError):
            await newcomer.acquire(timeout=0)
        waiter.send_signal(signal.SIGCONT)
        assert waiter.stdout is not None
        async with asyncio.timeout(5):
            line = await asyncio.to_thread(waiter.stdout.readline)
        assert line.strip() == "holding"
    finally:
        waiter.kill()
        waiter.wait()
        if waiter.stdout is not None:
            waiter.stdout.close()


async def test_tasks_of_one_process_share_its_slots_up_to_the_limit(semaphores: Make) -> None:
    sem = semaphores(unique_name("sem"), 2)
    inside = most = 0

    async def call() -> None:
        nonlocal inside, most
        async with sem:
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(call() for _ in range(12)))
    assert most == 2
    assert sem.held == 0 and sem.waiting == 0


# -- waking without polling ---------------------------------------------------------------------


@pytest.mark.slow
async def test_a_release_wakes_a_waiter_at_once_and_the_waiter_does_not_poll(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()  # its own server: the command counts are this test's alone
    name = unique_name("sem")
    a = RedisSemaphore(server.url, name, 1, lease_s=30.0)
    b = RedisSemaphore(server.url, name, 1, lease_s=30.0)
    stats = aioredis.Redis.from_url(server.url)
    try:
        holder = await a.acquire()
        await stats.config_resetstat()
        waiter = asyncio.create_task(b.acquire())
        await asyncio.sleep(1.0)
        assert not waiter.done()
        released = time.monotonic()
        await a.release(holder)
        async with asyncio.timeout(5):
            await waiter
        woken = time.monotonic() - released
        info = await stats.info("commandstats")
    finally:
        await a.aclose()
        await b.aclose()
        await stats.aclose()
    calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in info.items()}
    sent = calls.get("evalsha", 0) + calls.get("eval", 0) + calls.get("blpop", 0)
    # b: acquire, one BLPOP, acquire again; a: its release (+ a first-use retry of the script).
    assert calls.get("blpop", 0) <= 2, calls
    assert sent <= 7, f"{sent} commands in a 1 s wait: the waiter polls ({calls})"
    assert woken < 0.25, f"the waiter took its slot {woken:.3f} s after the release"


# -- surviving a restart --------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_holder_and_a_waiter_carry_on_across_a_redis_restart(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory(appendonly=True)
    name = unique_name("sem")
    a = RedisSemaphore(server.url, name, 1, lease_s=3.0)
    b = RedisSemaphore(server.url, name, 1, lease_s=3.0)
    try:
        holder = await a.acquire()
        waiter = asyncio.create_task(b.acquire(timeout=15))
        await asyncio.sleep(0.2)
        await asyncio.to_thread(server.restart, 0.3)
        await asyncio.sleep(0.5)
        assert not waiter.done(), "the slot is still held after the restart (append-only file)"
        await a.release(holder)
        async with asyncio.timeout(5):
            await waiter
        assert a.lost_total == 0
    finally:
        await a.aclose()
        await b.aclose()


# -- the pool ----------------------------------------------------------------------------------------


async def test_a_pool_worker_waiting_for_a_slot_holds_its_item_and_counts_as_busy() -> None:
    release = asyncio.Event()
    inside = 0

    async def handle(payload: int) -> None:
        nonlocal inside
        inside += 1
        await release.wait()
        inside -= 1

    async with Pool(handle, concurrency=3, semaphore=asyncio.Semaphore(1), monitor=False) as pool:
        await pool.submit_many(range(5))
        await asyncio.sleep(0.05)
        assert inside == 1
        assert pool.probe.busy == 3  # two workers wait for the slot, each holding an item
        assert pool.broker.depth() == 2
        release.set()
        await pool.join(timeout=5)
    assert pool.probe.processed_total == 5


class TooManyRequests(Exception):
    status_code = 429
    headers = {"Retry-After": "0.3"}  # noqa: RUF012


async def test_a_pool_worker_sleeping_before_a_retry_does_not_hold_the_slot() -> None:
    done: list[tuple[str, float]] = []
    started = time.monotonic()
    refused: set[str] = set()

    async def handle(payload: str) -> None:
        if payload == "a" and not refused:
            refused.add(payload)
            raise TooManyRequests
        done.append((payload, time.monotonic() - started))

    broker = MemoryBroker(10)
    await broker.put("a")
    await broker.put("b")
    async with Pool(
        handle, broker=broker, concurrency=2, adaptive=False, semaphore=asyncio.Semaphore(1), monitor=False
    ) as pool:
        await pool.join(timeout=5)
    assert [p for p, _ in done] == ["b", "a"]
    assert done[0][1] < 0.2, "b waited for a's retry: the slot was held while a slept"
    await broker.close()


def test_a_pool_refuses_a_semaphore_that_is_not_an_async_context_manager() -> None:
    async def handle(payload: object) -> None: ...

    with pytest.raises(TypeError, match="semaphore must be an async context manager"):
        Pool(handle, semaphore=3, monitor=False)  # type: ignore[arg-type]


# -- arguments and secrets -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": -1}, "limit"),
        ({"limit": 1.5}, "limit"),
        ({"limit": True}, "limit"),
        ({"limit": 10**9}, "limit"),
        ({"lease_s": 0}, "lease_s"),
        ({"lease_s": -1}, "lease_s"),
        ({"lease_s": float("inf")}, "lease_s"),
        ({"lease_s": float("nan")}, "lease_s"),
        ({"lease_s": 0.01}, "lease_s"),
        ({"name": ""}, "name"),
        ({"name": "with space"}, "name"),
        ({"name": "a|b"}, "name"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"url": "http://127.0.0.1:6379"}, "url"),
    ],
)
def test_bad_arguments_are_refused_with_an_error_naming_them(kwargs: dict[str, Any], named: str) -> None:
    args: dict[str, Any] = {"url": "redis://127.0.0.1:6379/0", "name": "n", "limit": 3, **kwargs}
    with pytest.raises(ValueError, match=named):
        RedisSemaphore(args.pop("url"), args.pop("name"), args.pop("limit"), **args)


async def test_a_negative_timeout_is_refused(semaphores: Make) -> None:
    with pytest.raises(ValueError, match="timeout"):
        await semaphores(unique_name("sem"), 1).acquire(timeout=-1)


async def test_releasing_a_slot_the_task_does_not_hold_is_an_error(semaphores: Make) -> None:
    sem = semaphores(unique_name("sem"), 1)
    await sem.acquire()
    with pytest.raises(RuntimeError, match="holds no slot"):
        await asyncio.create_task(sem.release())  # another task
    await sem.release()


@pytest.mark.slow
async def test_the_password_never_shows_in_reprs_errors_or_logs(
    redis_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = redis_factory(password="right-pass")
    nowhere = RedisSemaphore(f"redis://:hunter2@127.0.0.1:{free_port()}/0", "s", 1, connect_timeout=0.3)
    wrong = RedisSemaphore(f"redis://:wrong-pass@127.0.0.1:{server.port}/0", "s", 1, connect_timeout=0.3)
    texts = [repr(nowhere), repr(wrong)]
    for sem in (nowhere, wrong):
        with pytest.raises(RedisUnavailable) as caught:
            await sem.acquire()
        texts.append(str(caught.value))
        with pytest.raises(TimeoutError) as timed_out:
            await sem.acquire(timeout=0.05)
        texts.append(str(timed_out.value))
        await sem.aclose()
    texts.append(caplog.text)
    assert "***" in texts[0]
    for text in texts:
        assert "hunter2" not in text and "wrong-pass" not in text, text
    right = RedisSemaphore(server.url, "s", 1)
    await right.acquire()
    await right.aclose()


# -- docs/reference-pool.md -------------------------------------------------------------------------


def test_the_documented_semaphore_example_runs_and_keeps_3_calls_at_once(redis_server: RedisServer) -> None:
    program = snippet("redis-semaphore", "docs/reference-pool.md")
    url = "redis://127.0.0.1:6379/0"
    assert url in program
    assert run_example(program.replace(url, redis_server.url)) == ["30 done, at most 3 calls at once"]


async def test_a_cancellation_the_client_swallows_still_ends_the_wait(
    semaphores: Make, watcher: aioredis.Redis
) -> None:
    """Python 3.11's asyncio.wait_for (redis-py's socket timeouts) can lose a cancellation
    that lands as a command completes: the acquire must end all the same, not wait on."""
    name = unique_name("sem")
    a, b = semaphores(name, 1), semaphores(name, 1)
    holder = await a.acquire()
    bound = b._bind()
    real, entered = bound.acquire, asyncio.Event()

    async def swallowing(**kwargs: Any) -> Any:
        entered.set()
        with contextlib.suppress(asyncio.CancelledError):  # the bug: the reply came, the cancellation is lost
            await asyncio.sleep(0.5)
        return await real(**kwargs)

    bound.acquire = swallowing
    waiting = asyncio.create_task(b.acquire())
    await asyncio.wait_for(entered.wait(), 5)
    waiting.cancel()
    done, _ = await asyncio.wait({waiting}, timeout=5)
    assert done, "the cancelled acquire went on waiting"
    assert waiting.cancelled()
    await wait_until(lambda: _is(watcher.zcard(f"{a.prefix}:line"), 0))  # its place given back
    await a.release(holder)
