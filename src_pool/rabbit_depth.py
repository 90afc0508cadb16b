"""The depth of a RabbitMQ queue, known without a round trip.

AMQP has no cheap way to read a queue's depth at every put: a passive
``queue.declare`` costs a round trip. :class:`DepthEstimate` keeps the ready
count of the last passive declare (refreshed every ``refresh_interval`` in
the background) and adds what this process did since: puts and releases add,
deliveries take away. It also remembers the retries this process scheduled
(they wait in retry queues, outside the count) until they come back, or
until they are long overdue (another process took them).
"""

from __future__ import annotations

import time


class DepthEstimate:
    __slots__ = ("at", "base", "consumers", "delta", "refresh_interval", "scheduled")

    def __init__(self, refresh_interval: float) -> None:
        self.refresh_interval = refresh_interval
        self.base = 0
        self.delta = 0
        """Ready items added (+) or taken (-) by this process since the last refresh."""
        self.at: float | None = None
        """When the base was read (monotonic); None while disconnected."""
        self.consumers: int | None = None
        self.scheduled: dict[str | int, float] = {}  # retries this process scheduled: id -> due (monotonic)

    def estimate(self) -> int:
        return max(0, self.base + self.delta)

    def read(self, ready: int, consumers: int) -> None:
        """A passive declare answered (with nothing moved while it was on its way)."""
        self.base = int(ready)
        self.delta = 0
        self.consumers = int(consumers)
        self.at = time.monotonic()

    def value(self) -> int | None:
        """The estimate, None while disconnected or when the last read is
        older than three refresh intervals."""
        at = self.at
        if at is None or time.monotonic() - at > 3 * self.refresh_interval:
            return None
        return self.estimate()

    def schedule(self, id_: str | int, delay: float) -> None:
        now = time.monotonic()
        self._prune(now)
        self.scheduled[id_] = now + delay

    def came_back(self, id_: str | int) -> bool:
        """Whether a delivery is one of our retries, back from its retry queue
        (it was never in our count)."""
        return bool(self.scheduled) and self.scheduled.pop(id_, None) is not None

    def delayed(self) -> int:
        if self.scheduled:
            self._prune(time.monotonic())
        return len(self.scheduled)

    def _prune(self, now: float) -> None:
        """Forget retries long overdue: another process took them."""
        grace = 2 * self.refresh_interval + 1.0
        for id_, due in list(self.scheduled.items()):
            if due + grace < now:
                del self.scheduled[id_]
