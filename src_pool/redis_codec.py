"""How the Redis broker stores an item: ``<priority>|<attempts>|<lost>|<json>``.

The priority digit and two counts stand in front of the JSON so that the
scripts can re-queue or dead-letter an item, and count what happened to it,
without decoding and re-encoding the payload:

``attempts``
    Failed attempts of the handler, counted by the pool (its
    ``RetryPolicy.max_attempts`` bounds them).
``lost``
    Deliveries lost with a dead consumer, counted by the reaper (the broker's
    ``max_lost_deliveries`` bounds them). A poison item that crashes its
    process ends in the dead-letter list; an item that merely failed in its
    handler is not blamed for crashes, nor the other way round.

The JSON is ``{"id": ..., "t": enqueued_at, "p": payload, "e": last_error}``.
Messages written before the ``lost`` count existed (``<priority>|<attempts>|<json>``)
are read with ``lost`` 0. Anything else, and any message that fails to decode
for whatever reason (deeply nested JSON raises RecursionError), is a
:class:`MalformedMessage`: the broker dead-letters it and goes on.

Dead letters are ``<json header>\\n<message>``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .broker import MAX_PRIORITY, Envelope, PayloadError

#: Longest error text kept with a retried or dead-lettered item.
MAX_ERROR_CHARS = 2000
_BAR = 124  # b"|"
_DIGITS = range(48, 58)


class MalformedMessage(PayloadError):
    """A message in the queue that this broker did not write or cannot read."""


class RedisDelivery:
    """The receipt of one delivery: the message as it sits in the processing
    list. Compared by identity: two deliveries of equal bytes (a put sent
    twice) are two deliveries."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def __repr__(self) -> str:
        return f"RedisDelivery({self.raw[:40]!r})"


@dataclass(frozen=True, slots=True)
class RedisDeadLetter:
    """An entry of the dead-letter list."""

    error: str
    at: float
    """Server time (seconds since the epoch) when it was dead-lettered."""
    raw: bytes
    """The message as it was stored."""
    envelope: Envelope | None
    """The item, or None when the message could not be decoded."""


def encode(envelope: Envelope, error: str | None) -> bytes:
    """The stored form of ``envelope``; :class:`PayloadError` if it cannot travel as JSON."""
    body: dict[str, Any] = {"id": envelope.id, "t": envelope.enqueued_at, "p": envelope.payload}
    if error is not None:
        body["e"] = error[:MAX_ERROR_CHARS]
    try:
        text = json.dumps(body, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise PayloadError(f"payload cannot travel as JSON: {type(exc).__name__}: {exc}") from None
    return f"{envelope.priority}|{envelope.attempts}|{envelope.lost}|{text}".encode()


def _count(raw: bytes, start: int) -> tuple[int, int]:
    """The decimal count at ``raw[start:]`` ended by a bar, and where the next field starts."""
    bar = raw.index(b"|", start)
    if bar == start or any(c not in _DIGITS for c in raw[start:bar]):
        raise ValueError("a count is not a number")
    return int(raw[start:bar]), bar + 1


def decode(raw: bytes) -> Envelope:
    """The envelope in a stored message (its receipt a new :class:`RedisDelivery`),
    or :class:`MalformedMessage`, whatever made it unreadable."""
    try:
        priority = raw[0] - 48
        if not 0 <= priority <= MAX_PRIORITY or raw[1] != _BAR:
            raise ValueError("no priority prefix")
        attempts, at = _count(raw, 2)
        lost = 0
        if raw[at : at + 1] != b"{":
            lost, at = _count(raw, at)
        body = json.loads(raw[at:])
        if type(body) is not dict or type(body.get("id")) is not str or "p" not in body:
            raise ValueError("not an envelope object")
        error = body.get("e")
        return Envelope(
            body["id"],
            body["p"],
            attempts,
            priority,
            float(body.get("t", 0.0)),
            None if error is None else str(error),
            RedisDelivery(raw),
            lost,
        )
    except Exception as exc:  # any failure at all: a message must never jam the consumer
        raise MalformedMessage(
            f"malformed message ({type(exc).__name__}: {str(exc)[:200]}): {raw[:80]!r}"
            + ("..." if len(raw) > 80 else "")
        ) from None


def dead_letter_entry(entry: bytes) -> RedisDeadLetter:
    """One entry of the dead-letter list, read."""
    head, _, raw = entry.partition(b"\n")
    try:
        meta = json.loads(head)
        error, at = str(meta.get("error")), float(meta.get("at", 0)) / 1000.0
    except Exception:
        error, at = "unreadable dead-letter header", 0.0
    try:
        envelope: Envelope | None = decode(raw)
    except MalformedMessage:
        envelope = None
    return RedisDeadLetter(error, at, raw, envelope)


def unreceived(held: list[bytes], *known: Iterable[bytes]) -> list[bytes]:
    """The messages of a processing list (``held``) beyond those this process
    knows of, in order; counted, since two deliveries of equal bytes are two."""
    counts: Counter[bytes] = Counter()
    for raws in known:
        counts.update(raws)
    unknown = []
    for raw in held:
        if counts[raw] > 0:
            counts[raw] -= 1
        else:
            unknown.append(raw)
    return unknown
