"""The pool: N asyncio workers that block on a broker.

::

    async def handle(payload):
        await call_the_api(payload)

    async with Pool(handle, concurrency=20, limiter=TokenBucket(100)) as pool:
        await pool.submit({"user": 42})
        await pool.join()

Waiting
    A worker takes an item without waiting when one is there
    (:meth:`Broker.get_nowait`), and otherwise blocks in
    :meth:`Broker.fetch` until one arrives. No timeout, no sleep, no flag to
    poll: an idle pool wakes up zero times. It stops by cancellation.

Stopping
    :meth:`Pool.stop` stops taking work, gives the items being processed
    ``drain_timeout`` seconds to finish, then cancels their handlers and
    hands those items back to the broker (:meth:`Broker.release`): nothing
    is lost, nothing is acknowledged twice, and only a handler that really
    returned counts as done. A worker cancelled from outside does the same.

Failures
    A handler that raises is retried with full-jitter backoff up to
    ``RetryPolicy.max_attempts``, then dead-lettered; raising
    :class:`~src_pool.retry.Reject` dead-letters at once. An exception that
    carries HTTP 429 (as httpx, requests, aiohttp, openai and anthropic raise
    it; :func:`qhealth.ratelimit.is_rate_limited` decides) is counted as rate limited,
    its ``Retry-After`` is honoured with jitter, and the pool's concurrency is
    cut (:class:`~src_pool.aimd.AIMD`). A worker that dies of a bug in the
    pool or broker is logged and replaced.

Flow control
    The item is taken *first*, and the rate-limit token acquired while the
    worker holds it: a worker waiting for a token, or sleeping before a
    retry, is busy with that item (qhealth counts it so), and the next item
    stays in the queue where another process's worker can take it. A
    ``semaphore`` (``asyncio.Semaphore`` for one process,
    :class:`~src_pool.redis_semaphore.RedisSemaphore` for all of them) caps
    the handler calls in progress: a worker holds a slot around each call
    (not while it sleeps before a retry), waits for it holding its item,
    and takes the rate-limit token once it has the slot, right before the
    call.

Instrumentation
    On by default, through ``qhealth.default_monitor()`` unless a monitor is
    given (``monitor=False`` turns it off). Per item the pool only bumps
    counters; the clock is read when a worker really blocks (idle spans), and
    to feed the duration and wait histograms for one item in ``observe_every``
    and for every item that ends an idle wait (so a slow pool times them all).
    Workers parked by AIMD stop counting as workers, so that "items waiting
    while workers sit idle" means what it says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Literal, Self

from qhealth import Monitor, Probe, default_monitor
from qhealth.ratelimit import is_rate_limited
from qhealth.ratelimit import retry_after_s as retry_after

from .aimd import AIMD
from .broker import Broker, BrokerClosed, Envelope, check_positive_int, check_timeout
from .limiter import Limiter
from .memory import MemoryBroker
from .retry import Reject, RetryPolicy
from .throttled_log import ThrottledLog

logger = logging.getLogger("src_pool")

Handler = Callable[[Any], Awaitable[object]]

#: Error descriptions kept with retried and dead-lettered items are cut here.
MAX_ERROR_CHARS = 500


class PoolClosed(BrokerClosed):
    """The pool was stopped: it takes no more items. (A pool's own in-memory
    broker answers :class:`~src_pool.BrokerClosed`, its base class.)"""


@dataclass(frozen=True, slots=True)
class StopReport:
    """What :meth:`Pool.stop` did."""

    drained: bool
    """Every in-flight item finished within the drain timeout."""
    released: int
    """Items handed back to the broker unprocessed (cut off at the deadline)."""
    left_in_flight: int
    """Items whose handler ignored cancellation: still in flight at the broker,
    which returns them by its own recovery (at least once)."""


def describe(exc: BaseException) -> str:
    """``"TypeName: message"``, bounded (and safe from a ``__str__`` that raises)."""
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:
        text = f"{type(exc).__name__}: <unprintable>"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def queue_order(envelope: Envelope) -> tuple[int, float, int]:
    """Where an item stood in its queue: higher priority first, then the
    earlier enqueued (the in-memory broker stamps a burst of puts alike, and
    its int ids tell them apart)."""
    id_ = envelope.id
    return -envelope.priority, envelope.enqueued_at, id_ if isinstance(id_, int) else 0


def holding_a_slot(
    semaphore: AbstractAsyncContextManager[Any], limiter: Limiter | None, handler: Handler
) -> Handler:
    """``handler`` called inside ``semaphore``, with the rate-limit token
    taken once the slot is held: a call that waited for a slot does not go
    out on a token taken long before (calls would bunch up)."""

    async def call(payload: Any) -> object:
        async with semaphore:
            if limiter is not None:
                await limiter.acquire()
            return await handler(payload)

    return call


class Pool:
    """Workers running ``handler(payload)`` for every item of a broker.

    ``broker``: default a fresh :class:`MemoryBroker` of ``capacity`` items,
    owned (closed) by the pool. ``concurrency``: workers; with ``adaptive``
    (default) AIMD lowers the active ones on 429s, down to
    ``min_concurrency``, and grows them back (pass an :class:`AIMD` of your
    own to tune how). ``limiter``: a shared rate limit
    acquired before every call of the handler. ``semaphore``: any async
    context manager that many tasks can enter at once, held around every
    call of the handler (a concurrency cap). ``drain_timeout``: seconds
    :meth:`stop` lets in-flight items finish. ``rng``: the jitter source
    (seed it in tests).
    """

    def __init__(
        self,
        handler: Handler,
        *,
        name: str = "src_pool",
        broker: Broker | None = None,
        capacity: int | None = 1000,
        concurrency: int = 10,
        min_concurrency: int = 1,
        adaptive: bool | AIMD = True,
        limiter: Limiter | None = None,
        semaphore: AbstractAsyncContextManager[Any] | None = None,
        retry: RetryPolicy | None = None,
        drain_timeout: float = 30.0,
        monitor: Monitor | Literal[False] | None = None,
        observe_every: int = 64,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be an async callable, got {handler!r}")
        check_positive_int(concurrency, "concurrency")
        check_positive_int(min_concurrency, "min_concurrency")
        check_positive_int(observe_every, "observe_every")
        if min_concurrency > concurrency:
            raise ValueError(
                f"min_concurrency ({min_concurrency}) must not exceed concurrency ({concurrency})"
            )
        self.drain_timeout = check_timeout(drain_timeout, "drain_timeout") or 0.0
        self.name = name
        self._handler = handler
        self._owns_broker = broker is None
        # A broker of its own hands envelopes to nobody else: it may reuse them.
        self.broker: Broker = MemoryBroker(capacity, reuse_envelopes=True) if broker is None else broker
        self.concurrency = concurrency
        if isinstance(adaptive, AIMD):
            if adaptive.maximum != concurrency:
                raise ValueError(f"AIMD maximum ({adaptive.maximum}) must equal concurrency ({concurrency})")
            self.aimd: AIMD | None = adaptive
        else:
            self.aimd = AIMD(concurrency, minimum=min_concurrency) if adaptive else None
        self.limiter = limiter
        self.semaphore = semaphore
        # What the workers call, and the limiter they acquire before it:
        # with a semaphore, the token is taken inside the slot (decided once;
        # without one, the handler itself and no extra call).
        self._gate = limiter
        if semaphore is not None:
            if not (hasattr(semaphore, "__aenter__") and hasattr(semaphore, "__aexit__")):
                raise TypeError(
                    "semaphore must be an async context manager such as asyncio.Semaphore(n) or "
                    f"src_pool.redis_semaphore.RedisSemaphore, got {semaphore!r}"
                )
            self._handler = holding_a_slot(semaphore, limiter, handler)
            self._gate = None
        self.retry_policy = retry or RetryPolicy()
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._observe_every = observe_every
        # Counting. A pool that owns its (in-memory) broker reads the broker's
        # own counters at each tick (before_tick) and counts nothing per item;
        # otherwise the workers count on the probe with plain attribute updates
        # (what an untimed probe's started()/succeeded()/attempted() do), which
        # is only right for a probe of its own: hence one queue name per pool.
        self._counted_by_broker = isinstance(self.broker, MemoryBroker) and self._owns_broker
        self._failed_attempts = 0
        self._dead_lettered = 0
        if monitor is False:
            self._probe = Probe(name, timed=False)
        else:
            monitor = monitor or default_monitor()
            if name in monitor.queues:
                raise ValueError(
                    f"queue {name!r} is already watched by this monitor: give each pool its own name "
                    "(or monitor.unwatch(name) a stopped pool's queue first)"
                )
            self._probe = monitor.watch(
                name,
                depth=self.broker.depth,
                capacity=self.broker.capacity,
                timed=False,
                counts=self._broker_counts,
            )
        # Decided once, here: on a broker of its own, which counts its puts,
        # submit *is* that broker's push (no call of ours around it per item).
        self.submit: Callable[..., Awaitable[None]] = (
            self.broker.push if isinstance(self.broker, MemoryBroker) and self._counted_by_broker
            else self._submit
        )  # fmt: skip
        """Enqueue an item: ``await pool.submit(payload, priority=0, timeout=None)``.
        Blocks while the broker is at its high watermark; :class:`~src_pool.QueueFull`
        after ``timeout`` seconds; :class:`PoolClosed` once the pool is stopped."""
        self._workers: set[asyncio.Task[None]] = set()
        self._idle: set[asyncio.Task[None]] = set()  # blocked in fetch()
        self._parked: deque[asyncio.Future[None]] = deque()
        self._parked_tasks: set[asyncio.Task[None]] = set()
        self._allowed = concurrency
        self._growing = False  # AIMD below its maximum: successes raise it
        self._epoch = 0  # AIMD's epoch: bumped at every cut
        self._hold = False  # workers must look up: stopping, or AIMD wants fewer
        self._active = 0  # workers not parked
        self._joiners: list[asyncio.Future[None]] = []
        self._started = False
        self._stopping = False
        self._stop_task: asyncio.Future[StopReport] | None = None
        self._crashes = 0
        self._released = 0
        self._leftovers: list[Envelope] = []
        self._log = ThrottledLog(60.0, log=logger)  # a failing broker cannot flood the logs

    # -- producing ------------------------------------------------------------

    async def _submit(self, payload: Any, priority: int = 0, timeout: float | None = None) -> None:
        """:attr:`submit` on a broker that does not count for the pool."""
        if self._stopping:
            raise self._closed_error()
        await self.broker.put(payload, priority=priority, timeout=timeout)
        self._probe.enqueued_total += 1

    def _closed_error(self) -> PoolClosed:
        return PoolClosed(f"pool {self.name!r} is stopped: it takes no more items")

    def _broker_counts(self) -> dict[str, int]:
        """The counts the in-memory broker keeps when it does the counting (the
        monitor's tick reads them in place of the probe's own); none otherwise."""
        if not self._counted_by_broker:
            return {}
        broker = self.broker
        assert isinstance(broker, MemoryBroker)
        acked = broker.acked_total
        return {
            "enqueued_total": broker.put_total,
            "busy": broker.in_flight,
            "processed_total": acked + self._dead_lettered,
            "attempts_total": acked + self._failed_attempts,
        }

    def _sync_counters(self) -> None:
        """Copy the broker's counts into the probe when :attr:`probe` is read (on
        the pool's own thread: the probe's one writer)."""
        for name, value in self._broker_counts().items():
            setattr(self._probe, name, value)

    @property
    def probe(self) -> Probe:
        """The pool's qhealth probe, its counters up to date."""
        self._sync_counters()
        return self._probe

    async def submit_many(
        self, payloads: Iterable[Any], *, priority: int = 0, timeout: float | None = None
    ) -> list[Envelope]:
        """Enqueue several items in order (one round trip on networked brokers)."""
        if self._stopping:
            raise self._closed_error()
        envelopes = await self.broker.put_many(payloads, priority=priority, timeout=timeout)
        if not self._counted_by_broker:
            self._probe.enqueued_total += len(envelopes)
        return envelopes

    # -- running --------------------------------------------------------------

    async def start(self) -> Self:
        """Start the workers (and the broker). Idempotent."""
        if self._stopping:
            raise PoolClosed(f"pool {self.name!r} was stopped; make a new one")
        if self._started:
            return self
        self._started = True
        await self.broker.start()
        for _ in range(self.concurrency):
            self._spawn()
        return self

    def _spawn(self) -> None:
        if self._stopping:
            return
        task = asyncio.get_running_loop().create_task(self._work(), name=f"{self.name}-worker")
        self._workers.add(task)
        task.add_done_callback(self._on_worker_done)

    def _on_worker_done(self, task: asyncio.Task[None]) -> None:
        self._workers.discard(task)
        if self._stopping:
            return
        if task.cancelled():  # cancelled from outside: its item went back; keep the pool its size
            logger.warning("pool %r: a worker was cancelled; replacing it", self.name)
            self._spawn()
            return
        exc = task.exception()
        if exc is None or isinstance(exc, BrokerClosed):
            return  # the broker went away: nothing to replace the worker for
        self._log.warning(
            "worker-died", "pool %r: a worker died (%s); replacing it", self.name, describe(exc)
        )
        self._crashes += 1
        delay = self._rng.uniform(0.0, min(5.0, 0.05 * 2.0 ** min(self._crashes, 10)))
        asyncio.get_running_loop().call_later(delay, self._spawn)

    async def _work(self) -> None:
        """The worker: take an item, call the handler, settle, and again.

        This is the one path every item takes, its first attempt and the
        retries its worker makes holding it alike (so it is written out once,
        inline: it runs once per item). ``envelope`` is the item this worker
        holds, None between items."""
        probe = self._probe
        get_nowait = self.broker.get_nowait
        ack = self.broker.ack
        handler = self._handler
        limiter = self._gate
        counting = not self._counted_by_broker
        every = self._observe_every
        countdown = every
        timed = False
        started = 0.0
        envelope: Envelope | None = None
        self._active += 1
        self._update_hold()
        probe.worker_started()
        parked = False
        try:
            while True:
                if envelope is None:  # between items: take the next one
                    if self._hold:  # stopping, or AIMD wants fewer workers
                        if self._stopping:
                            break
                        if self._active > self._allowed:
                            parked = True
                            await self._park()
                            parked = False
                        else:
                            self._update_hold()
                        continue
                    envelope = get_nowait()
                    if envelope is None:
                        envelope = await self._wait_for_item()
                        if envelope is None:
                            continue
                        countdown = 1  # after an idle wait the clock is cheap: a slow pool times every item
                    if counting:
                        probe.busy += 1
                    countdown -= 1
                    timed = not countdown  # one item in `every` is timed: the clock costs more than the rest
                    if timed:
                        countdown = every
                        started = self._time_wait(envelope)
                epoch = self._epoch  # a 429 to this call says something only if no cut came since
                try:
                    if limiter is not None:
                        await limiter.acquire()
                    if counting:
                        probe.attempts_total += 1
                    await handler(envelope.payload)
                except BaseException as exc:  # _recover re-raises what it must
                    envelope = await self._recover(envelope, exc, epoch)
                    if envelope is None and timed:
                        probe.observe_duration(time.monotonic() - started)
                    continue
                ack(envelope)
                envelope = None
                if counting:
                    probe.busy -= 1
                    probe.processed_total += 1
                if timed:
                    probe.observe_duration(time.monotonic() - started)
                if self._growing:
                    self._grow()
        finally:
            if not parked:
                self._active -= 1
                self._update_hold()
            probe.worker_stopped()

    def _time_wait(self, envelope: Envelope) -> float:
        """Record how long the item waited in the queue; when its processing starts."""
        self._probe.observe_wait(max(0.0, time.time() - envelope.enqueued_at))
        return time.monotonic()

    def _update_hold(self) -> None:
        self._hold = self._stopping or self._active > self._allowed

    async def _wait_for_item(self) -> Envelope | None:
        """Block until the broker hands over an item: the only place a worker is idle."""
        task = asyncio.current_task()
        assert task is not None
        if self._joiners:
            self._check_joined(waiting=1)
        self._idle.add(task)
        self._probe.idle_begin()
        try:
            batch = await self.broker.fetch(1)
        finally:
            self._probe.idle_end()
            self._idle.discard(task)
        if self._stopping:  # handed an item while stopping: it goes back untouched
            await self.broker.release(batch)
            return None
        if len(batch) > 1:  # a broker that handed more than asked: keep the first
            await self.broker.release(batch[1:])
        return batch[0]

    # -- failures -------------------------------------------------------------

    async def _recover(self, envelope: Envelope, exc: BaseException, epoch: int) -> Envelope | None:
        """An attempt (begun in AIMD ``epoch``) raised ``exc``. Returns the
        item to try again at once, after a short backoff slept holding it (the
        worker stays busy); None once it is dead-lettered, handed back for a
        later retry, or released; re-raises a cancellation (the item released)."""
        if not isinstance(exc, Exception):  # cancelled, KeyboardInterrupt, SystemExit
            await self._give_back(envelope)
            raise exc
        policy = self.retry_policy
        attempts = envelope.attempts + 1
        self._failed_attempts += 1
        error = describe(exc)
        limited = is_rate_limited(exc)
        if limited:
            self._probe.rate_limited()
            self._on_rate_limited(epoch)
        if isinstance(exc, Reject) or attempts >= policy.max_attempts:
            await self._settle(envelope, attempts, error, dead=True)
            return None
        if limited:
            delay = policy.after_rate_limit(retry_after(exc), attempts, self._rng)
        else:
            delay = policy.backoff(attempts, self._rng)
        if delay > policy.hold_up_to_s:
            await self._settle(envelope, attempts, error, dead=False, delay=delay)
            return None
        failed = replace(envelope, attempts=attempts, last_error=error)
        try:
            await self._sleep(delay)  # holding the item: the worker stays busy
        except BaseException:
            await self._give_back(failed)
            raise
        return failed

    async def _settle(
        self, envelope: Envelope, attempts: int, error: str, *, dead: bool, delay: float = 0.0
    ) -> None:
        failed = replace(envelope, attempts=attempts, last_error=error)
        try:
            if dead:
                logger.warning(
                    "pool %r: item %s dead-lettered after %d attempt(s): %s",
                    self.name,
                    envelope.id,
                    attempts,
                    error,
                )
                await self.broker.dead_letter(failed, error=error)
            else:
                await self.broker.retry(failed, delay=delay, error=error)
        except asyncio.CancelledError:
            self._probe.returned()
            raise
        except Exception:
            # The broker keeps the item in flight; its own recovery returns it.
            self._log.exception(
                "settle", "pool %r: could not hand item %s back to the broker", self.name, envelope.id
            )
            self._probe.returned()
            return
        if dead:
            self._dead_lettered += 1
            self._probe.failed()
        else:
            self._probe.returned()

    async def _give_back(self, envelope: Envelope) -> None:
        self._probe.returned()
        self._released += 1
        if self._stopping:  # stop() releases all leftovers at once, in queue order
            self._leftovers.append(envelope)
            return
        await self._release([envelope])

    async def _release(self, envelopes: list[Envelope]) -> None:
        try:
            await self.broker.release(envelopes)
        except Exception:
            self._log.exception("release", "pool %r: could not release %d item(s)", self.name, len(envelopes))

    # -- adaptive concurrency ---------------------------------------------------

    def _on_rate_limited(self, epoch: int) -> None:
        if self.aimd is not None and self.aimd.on_rate_limited(epoch):
            self._epoch = self.aimd.epoch
            self._allowed = self.aimd.allowed
            self._growing = self.aimd.growing
            self._update_hold()
            logger.info("pool %r: rate limited; concurrency cut to %d", self.name, self._allowed)

    def _grow(self) -> None:
        assert self.aimd is not None
        self.aimd.on_success()
        self._growing = self.aimd.growing
        allowed = self.aimd.allowed
        if allowed != self._allowed:
            self._allowed = allowed
            self._unpark()
            self._update_hold()

    async def _park(self) -> None:
        """Sit out until AIMD allows more workers; not counted as a worker meanwhile."""
        self._active -= 1
        self._update_hold()
        self._probe.worker_stopped()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._parked.append(waiter)
        task = asyncio.current_task()
        assert task is not None
        self._parked_tasks.add(task)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._active -= 1  # unparked and cancelled at once: undo the unpark
                self._update_hold()
            self._probe.worker_started()  # balanced by the worker's own worker_stopped()
            raise
        finally:
            self._parked_tasks.discard(task)
        self._probe.worker_started()

    def _unpark(self) -> None:
        while self._parked and self._active < self._allowed:
            waiter = self._parked.popleft()
            if not waiter.done():
                self._active += 1
                waiter.set_result(None)

    # -- waiting for the work to be done -------------------------------------------

    def _check_joined(self, waiting: int = 0) -> None:
        """Wake joiners when nothing is waiting, received but not yet taken
        (:attr:`Broker.buffered`), or in flight. Brokers that count their items
        in flight (and scheduled retries) say so exactly; for others, every
        worker must be idle or parked (``waiting``: the caller is about to
        block too)."""
        broker = self.broker
        depth = broker.depth()
        if depth is None or depth or broker.delayed or broker.buffered:
            return  # unknown is not empty: a networked broker's depth may not be read yet
        in_flight = broker.in_flight
        if in_flight is None:
            if len(self._idle) + len(self._parked_tasks) + waiting < len(self._workers):
                return
        elif in_flight:
            return
        joiners, self._joiners = self._joiners, []
        for joiner in joiners:
            if not joiner.done():
                joiner.set_result(None)

    async def join(self, timeout: float | None = None) -> None:
        """Wait until the queue is empty and no item is in flight (scheduled
        retries included, for brokers that report :attr:`Broker.delayed` and
        :attr:`Broker.in_flight`). TimeoutError after ``timeout`` seconds."""
        timeout = check_timeout(timeout)
        if not self._started:
            raise RuntimeError(f"pool {self.name!r} is not started: join() would wait forever")
        joiner: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._joiners.append(joiner)
        self._check_joined()
        async with asyncio.timeout(timeout):
            await joiner

    # -- stopping -----------------------------------------------------------------

    async def stop(self, drain_timeout: float | None = None) -> StopReport:
        """Stop taking work, let in-flight items finish within
        ``drain_timeout`` (default: the pool's), hand the rest back, close an
        owned broker. Idempotent: a second call waits for the first."""
        deadline = self.drain_timeout if drain_timeout is None else check_timeout(drain_timeout) or 0.0
        if self._stop_task is None:
            self._stopping = True  # from this instant, no worker takes another item, nor submit an item
            if self._owns_broker and isinstance(self.broker, MemoryBroker):
                self.broker.refuse_puts(self._closed_error)
            self._update_hold()
            self._stop_task = asyncio.ensure_future(self._stop(deadline))
        return await asyncio.shield(self._stop_task)

    async def _stop(self, deadline: float) -> StopReport:
        released_before = self._released
        for task in [*self._idle, *self._parked_tasks]:
            task.cancel()
        busy = set(self._workers)
        drained = True
        pending: set[asyncio.Task[None]] = set()
        if busy:
            _, pending = await asyncio.wait(busy, timeout=deadline)
            if pending:
                drained = False
                for task in pending:
                    task.cancel()
                _, pending = await asyncio.wait(pending, timeout=max(1.0, deadline))
        if self._leftovers:
            leftovers, self._leftovers = self._leftovers, []
            leftovers.sort(key=queue_order)
            await self._release(leftovers)
        for joiner in self._joiners:
            if not joiner.done():
                joiner.set_exception(PoolClosed(f"pool {self.name!r} stopped before the work was done"))
        self._joiners = []
        with contextlib.suppress(Exception):
            await self.broker.flush()
        if self._owns_broker:
            await self.broker.close()
        return StopReport(
            drained=drained, released=self._released - released_before, left_in_flight=len(pending)
        )

    # -- inspection ---------------------------------------------------------------

    @property
    def workers(self) -> int:
        """Worker tasks alive (parked ones included)."""
        return len(self._workers)

    @property
    def active(self) -> int:
        """Workers allowed to take items now (not parked by AIMD)."""
        return self._active

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
