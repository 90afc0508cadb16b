"""Settling RabbitMQ deliveries in batches: one frame per burst, not per item.

Workers ack, nack (release) and reject deliveries one at a time; what they
settle within one event-loop turn (and while the previous frames were on
their way) goes out together: nacks and rejects in order, then one
``multiple`` ack for the longest run of settled deliveries in delivery order,
single acks for the rest.

Delivery tags belong to one session (channel). When it ends, its pending
settlements are dropped (RabbitMQ has those deliveries back), and a sender
still running touches nothing more: the same tags soon name the deliveries
of the next session.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any


class Settlements:
    """Pending acks, nacks and rejects of the live session's deliveries.

    ``session()`` is the live session (None when there is none) and
    ``lost(session, what, exc)`` ends one whose channel failed."""

    def __init__(
        self,
        session: Callable[[], Any],
        lost: Callable[[Any, str, BaseException], None],
        transient: Callable[[], tuple[type[BaseException], ...]],
    ) -> None:
        self._session = session
        self._lost = lost
        self._transient = transient
        self._order: deque[int] = deque()  # delivery tags not yet settled at RabbitMQ, in order
        self._to_ack: set[int] = set()
        self._sent: set[int] = set()  # settled at RabbitMQ, still in _order
        self._ops: deque[tuple[str, int]] = deque()  # nacks and rejects, in order
        self._sender: asyncio.Task[None] | None = None

    def delivered(self, tag: int) -> None:
        self._order.append(tag)

    def ack(self, tag: int) -> None:
        self._to_ack.add(tag)
        self._start()

    def nack(self, tag: int) -> None:
        """Back to its place at the head of the queue (basic.nack with requeue)."""
        self._ops.append(("nack", tag))
        self._start()

    def reject(self, tag: int) -> None:
        """Dropped, to the work queue's dead-letter exchange (basic.reject without requeue)."""
        self._ops.append(("reject", tag))
        self._start()

    def reset(self) -> None:
        """The session ended: forget everything pending."""
        self._order.clear()
        self._to_ack.clear()
        self._sent.clear()
        self._ops.clear()

    @property
    def pending(self) -> bool:
        return bool(self._ops or self._to_ack or self._sender is not None)

    @property
    def sender(self) -> asyncio.Task[None] | None:
        return self._sender

    def _alive(self) -> Any:
        session = self._session()
        return session if session is not None and session.alive else None

    def _start(self) -> None:
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def flush(self) -> None:
        """Wait until every pending settlement is written to RabbitMQ (or its session is gone)."""
        while self.pending and self._alive() is not None:
            if self._sender is None:
                self._start()
            assert self._sender is not None
            await asyncio.shield(self._sender)

    async def _send(self) -> None:
        try:
            await asyncio.sleep(0)  # let the settlements of this loop iteration gather
            while self._ops or self._to_ack:
                session = self._alive()
                if session is None:
                    return
                try:
                    if not await self._send_round(session):
                        return
                except self._transient() as exc:
                    self._lost(session, "acknowledge", exc)
                    return  # the deliveries are RabbitMQ's again
        finally:
            self._sender = None

    async def _send_round(self, session: Any) -> bool:
        """One round of frames; False when the session ended meanwhile (after
        every await: its deliveries were forgotten and the tags now name the
        next session's deliveries, so touch nothing)."""
        channel = session.consumer
        while self._ops:
            verb, tag = self._ops.popleft()
            if verb == "nack":
                await channel.basic_nack(tag, requeue=True, wait=False)
            else:
                await channel.basic_reject(tag, requeue=False, wait=False)
            if self._session() is not session:
                return False
            self._sent.add(tag)
        order, to_ack, sent = self._order, self._to_ack, self._sent
        last = None
        while order and (order[0] in to_ack or order[0] in sent):
            tag = order.popleft()
            if tag in to_ack:
                to_ack.discard(tag)
                last = tag
            else:
                sent.discard(tag)
        singles = sorted(to_ack)
        to_ack.clear()
        if last is not None:
            await channel.basic_ack(last, multiple=True, wait=not singles)
        for i, tag in enumerate(singles):
            await channel.basic_ack(tag, wait=i == len(singles) - 1)
            if self._session() is not session:
                return False
            sent.add(tag)
        return True
