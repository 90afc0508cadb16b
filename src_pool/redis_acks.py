"""Acknowledgements to Redis in batches: one round trip per burst, not per item.

Workers acknowledge one item at a time; :class:`AckBatch` keeps the
acknowledged messages and sends all those made while the previous send was
on the wire in one ACK script call. The fetcher takes the waiting ones along
with its next fetch instead (:meth:`AckBatch.take`), and puts them back if
that fetch fails. Every message is known until Redis confirmed it (for the
reconciling of a lost fetch reply). Once the broker is closed, a send gives
up after a few failures: the reaper re-queues what stays unacknowledged.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator
from typing import Any

from .backoff import Backoff, persist


class AckBatch:
    """``script(keys=..., args=messages)`` removes the messages it was given
    and returns how many it found; ``settled(sent, removed)`` hears each answer."""

    def __init__(
        self,
        script: Callable[[], Any],
        keys: list[str],
        *,
        transient: Callable[[], tuple[type[BaseException], ...]],
        lost: Callable[[BaseException], None],
        settled: Callable[[int, int], None],
        closed: Callable[[], bool],
    ) -> None:
        self._script = script
        self._keys = keys
        self._transient = transient
        self._lost = lost
        self._settled = settled
        self._closed = closed
        self._waiting: list[bytes] = []
        self._sending: list[list[bytes]] = []
        self.task: asyncio.Task[None] | None = None

    def add(self, message: bytes) -> None:
        self._waiting.append(message)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._send())

    def take(self) -> list[bytes]:
        """The waiting acks, for a fetch to carry; :meth:`done` once it is answered."""
        batch, self._waiting = self._waiting, []
        self._sending.append(batch)
        return batch

    def done(self, batch: list[bytes], *, sent: bool) -> None:
        """A batch from :meth:`take` was answered (``sent``), or must wait for the next send."""
        self._sending.remove(batch)
        if not sent:
            self._waiting[:0] = batch

    def known(self) -> Iterator[bytes]:
        """Every message acknowledged and not yet confirmed by Redis."""
        yield from self._waiting
        for batch in self._sending:
            yield from batch

    @property
    def pending(self) -> bool:
        return bool(self._waiting) or self.task is not None

    async def _send(self) -> None:
        backoff = Backoff()
        script = self._script()

        def give_up(exc: BaseException) -> BaseException | None:
            return exc if self._closed() and backoff.failures > 8 else None

        try:
            await asyncio.sleep(0)  # let the acks of this loop iteration gather
            while self._waiting:
                batch = self.take()
                try:
                    removed = await persist(
                        functools.partial(script, keys=self._keys, args=batch),
                        transient=self._transient(),
                        lost=self._lost,
                        give_up=give_up,
                        backoff=backoff,
                    )
                except self._transient():
                    self.done(batch, sent=False)
                    return
                self.done(batch, sent=True)
                self._settled(len(batch), int(removed))
        finally:
            self.task = None

    async def flush(self) -> None:
        """Wait until every waiting ack has been sent (or given up on, once closed)."""
        while self.pending:
            task = self.task
            if task is None:
                self.task = task = asyncio.get_running_loop().create_task(self._send())
            await asyncio.shield(task)
