"""Splitting a batch of messages into round trips bounded in items and in bytes.

``put_many`` sends many items per round trip, but never one unbounded
command: 500 items of 1 MB made a single 500 MB script call on Redis (the
server buffers the whole command before it runs it, and the client holds it
twice) or a single 500 MB write on RabbitMQ. Each round trip carries at most
``max_items`` items and ``max_bytes`` bytes; one item larger than
``max_bytes`` (it passed the broker's payload limit) travels alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

#: Bytes per round trip by default: large enough that batching pays, small
#: enough that neither end buffers much.
DEFAULT_MAX_BATCH_BYTES = 8 * 1024 * 1024


def chunks(
    items: Sequence[T], size: Callable[[T], int], max_items: int, max_bytes: int
) -> Iterator[Sequence[T]]:
    """Consecutive runs of ``items``, in order, each within both bounds."""
    start, total = 0, 0
    for i, item in enumerate(items):
        n = size(item)
        if i > start and (i - start >= max_items or total + n > max_bytes):
            yield items[start:i]
            start, total = i, 0
        total += n
    if start < len(items):
        yield items[start:]
