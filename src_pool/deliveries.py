"""What a networked broker received and its pool has not settled yet.

The Redis and RabbitMQ brokers receive items in batches (a fetch script, a
burst of pushed deliveries) and hand them to workers one ``get_nowait`` or
``fetch`` at a time. :class:`Deliveries` is that hand-over, shared by both:

* the *buffer*: received, not yet taken by a worker (still owned by the
  server: in this consumer's processing list, or unacked);
* the *waiters*: workers blocked in ``fetch(max_items)``, served in arrival
  order, each with up to ``max_items`` of what is buffered;
* the items *in flight*: taken by a worker and not settled, keyed by their
  *delivery* (the envelope's ``receipt``), never by the item's id. One item
  can be delivered twice to one process: a put whose reply was lost and was
  sent again, a retry that comes back before the call that scheduled it has
  returned, a consumer that re-fetches its own copy after the reaper gave it
  away. Each delivery is settled on its own.

Cancellation-safe: a worker cancelled in ``fetch`` as items were handed to it
gives them back to the head of the buffer (or to the next waiter).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable, Iterable

from .broker import Envelope


def not_in_flight(envelope: Envelope, verb: str) -> ValueError:
    return ValueError(
        f"cannot {verb} item {envelope.id}: it is not in flight "
        "(already acknowledged, retried, dead-lettered or released)"
    )


class Deliveries:
    """The buffer, the waiting workers and the deliveries in flight of one broker.

    Receipts must be hashable and unique per delivery (compare by identity,
    or carry a delivery tag)."""

    __slots__ = ("buffer", "inflight", "settling", "waiters")

    def __init__(self) -> None:
        self.buffer: deque[Envelope] = deque()
        self.inflight: dict[Hashable, Envelope] = {}
        self.settling: set[Hashable] = set()
        """Deliveries whose settle is on its way to the server (still in flight)."""
        self.waiters: deque[tuple[asyncio.Future[list[Envelope]], int]] = deque()

    # -- handing out ----------------------------------------------------------

    def get_nowait(self) -> Envelope | None:
        if not self.buffer:
            return None
        envelope = self.buffer.popleft()
        self.inflight[envelope.receipt] = envelope
        return envelope

    def take(self, n: int) -> list[Envelope]:
        """Up to ``n`` buffered items, in flight from here on."""
        batch: list[Envelope] = []
        buffer, inflight = self.buffer, self.inflight
        while buffer and len(batch) < n:
            envelope = buffer.popleft()
            inflight[envelope.receipt] = envelope
            batch.append(envelope)
        return batch

    def add(self, envelopes: Iterable[Envelope]) -> None:
        """Items received from the server: to the waiting workers, the rest buffered."""
        self.buffer.extend(envelopes)
        self.serve()

    def serve(self) -> None:
        """Give each waiting worker, in order, up to what it asked for."""
        while self.buffer and self.waiters:
            waiter, n = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(self.take(n))

    async def wait(self, max_items: int, started: Callable[[], None]) -> list[Envelope]:
        """Block until items arrive for this worker (``started`` is called
        once it waits: the broker makes sure something fetches)."""
        waiter: asyncio.Future[list[Envelope]] = asyncio.get_running_loop().create_future()
        self.waiters.append((waiter, max_items))
        started()
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.unfetch(waiter.result())  # handed over as we were cancelled: give back
            elif not waiter.done():
                self.waiters.remove((waiter, max_items))
            raise

    def unfetch(self, envelopes: list[Envelope]) -> None:
        """Items handed to a worker that was cancelled: back to the head of the
        buffer (the server still holds them for this consumer), in order."""
        for envelope in reversed(envelopes):
            if self.inflight.pop(envelope.receipt, None) is not None:
                self.buffer.appendleft(envelope)
        self.serve()

    def prune_waiters(self) -> int:
        """Drop waiters that are done; what the rest want in all."""
        waiters = self.waiters
        while waiters and waiters[0][0].done():
            waiters.popleft()
        return sum(n for w, n in waiters if not w.done())

    def fail_waiters(self, error: BaseException) -> None:
        waiters, self.waiters = self.waiters, deque()
        for waiter, _ in waiters:
            if not waiter.done():
                waiter.set_exception(error)

    # -- settling -------------------------------------------------------------

    def settle(self, envelope: Envelope, verb: str) -> None:
        """Settled at once (an ack sent later in a batch); ValueError if not in flight."""
        receipt = envelope.receipt
        if receipt in self.settling or self.inflight.pop(receipt, None) is None:
            raise not_in_flight(envelope, verb)

    def begin(self, envelope: Envelope, verb: str) -> None:
        """A settle that needs a round trip starts: ValueError if the delivery
        is not in flight, or its settle already started."""
        receipt = envelope.receipt
        if receipt in self.settling or receipt not in self.inflight:
            raise not_in_flight(envelope, verb)
        self.settling.add(receipt)

    def begin_all(self, envelopes: Iterable[Envelope], verb: str) -> None:
        """:meth:`begin` for each, or for none (ValueError)."""
        begun: list[Envelope] = []
        try:
            for envelope in envelopes:
                self.begin(envelope, verb)
                begun.append(envelope)
        except ValueError:
            for envelope in begun:
                self.settling.discard(envelope.receipt)
            raise

    def end(self, envelope: Envelope) -> None:
        """The settle is done (or gave up): the delivery leaves."""
        self.settling.discard(envelope.receipt)
        self.inflight.pop(envelope.receipt, None)

    # -- inspection and reset -------------------------------------------------------

    def known(self) -> list[Envelope]:
        """Every delivery this process holds: buffered, in flight, settling."""
        return [*self.buffer, *self.inflight.values()]

    def clear(self) -> list[Envelope]:
        """Forget every delivery (their server took them back); the buffered ones."""
        buffered = list(self.buffer)
        self.buffer.clear()
        self.inflight.clear()
        self.settling.clear()
        return buffered
