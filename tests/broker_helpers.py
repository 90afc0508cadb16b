"""Helpers for tests of any :class:`src_pool.broker.Broker` (memory, Redis, RabbitMQ)."""

from __future__ import annotations

import asyncio
from typing import Any

from src_pool.broker import Broker


async def drain(broker: Broker, n: int, timeout: float = 5.0) -> list[Any]:
    """Take and acknowledge ``n`` items; their payloads in the order taken."""
    payloads: list[Any] = []
    async with asyncio.timeout(timeout):
        while len(payloads) < n:
            for envelope in await broker.fetch(n - len(payloads)):
                payloads.append(envelope.payload)
                broker.ack(envelope)
    await broker.flush()
    return payloads
