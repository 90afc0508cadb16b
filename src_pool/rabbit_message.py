"""How an envelope travels as an AMQP message, and back.

The body is the payload as JSON (never pickle), so that any AMQP client can
publish work for the pool and read its dead letters. What the broker needs
besides travels in properties: the envelope's id is the ``message_id``, its
priority the ``priority``, and three headers carry the rest:

``src-enqueued-us``  when the item was first put, in microseconds since the
                    epoch (an integer: AMQP tables carry floats as 32 bits,
                    which would round a timestamp to minutes)
``src-attempts``    failed attempts so far (absent: 0)
``src-error``       what the last failed attempt raised (retries, dead letters)
``src-dead-at-us``  when it was dead-lettered (dead letters only)

A message published by another client is welcome as long as its body is
JSON: it gets an id (``amqp-`` and a random part) and attempt 0. A body that
is not JSON (or headers of the wrong type) make a :class:`MalformedMessage`,
which the broker dead-letters instead of handing it to the pool.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .broker import MAX_PRIORITY, Envelope, PayloadError

#: Longest error text kept with a retried or dead-lettered item.
MAX_ERROR_CHARS = 2000
CONTENT_TYPE = "application/json"
PERSISTENT = 2
H_ENQUEUED_AT = "src-enqueued-us"
H_ATTEMPTS = "src-attempts"
H_ERROR = "src-error"
H_DEAD_AT = "src-dead-at-us"
#: Set by a quorum queue on a redelivery: the returns of this delivery so far.
H_DELIVERY_COUNT = "x-delivery-count"


class MalformedMessage(PayloadError):
    """A message in the queue that the pool cannot read (not JSON, bad headers)."""


def encode_payload(payload: Any, max_bytes: int) -> bytes:
    """The payload as compact JSON, or :class:`PayloadError` (not JSON-able, too large)."""
    try:
        body = json.dumps(payload, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise PayloadError(f"payload cannot travel as JSON: {type(exc).__name__}: {exc}") from None
    if len(body) > max_bytes:
        raise PayloadError(
            f"payload too large: {len(body)} bytes encoded, the limit is {max_bytes} (max_payload_bytes)"
        )
    return body


def to_us(seconds: float) -> int:
    """Seconds since the epoch as the integer microseconds a header carries."""
    return round(seconds * 1_000_000)


def headers_of(enqueued_at: float, attempts: int, error: str | None) -> dict[str, Any]:
    headers: dict[str, Any] = {H_ENQUEUED_AT: to_us(enqueued_at)}
    if attempts:
        headers[H_ATTEMPTS] = attempts
    if error is not None:
        headers[H_ERROR] = error[:MAX_ERROR_CHARS]
    return headers


def properties(
    message_id: str | int, priority: int, headers: dict[str, Any], *, expiration_ms: int | None = None
) -> Any:
    """pamqp ``Basic.Properties`` for a persistent JSON message."""
    from pamqp.commands import Basic

    return Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=PERSISTENT,
        priority=priority,
        message_id=str(message_id),
        headers=headers,
        expiration=None if expiration_ms is None else str(expiration_ms),
    )


def describe_body(body: bytes) -> str:
    return repr(body[:80]) + ("..." if len(body) > 80 else "")


def decode(message: Any, receipt: object) -> Envelope:
    """The envelope in a delivered aiormq message, or :class:`MalformedMessage`
    whatever made it unreadable (a message must never jam the consumer)."""
    try:
        return _decode(message, receipt)
    except MalformedMessage:
        raise
    except Exception as exc:
        raise MalformedMessage(
            f"malformed message ({type(exc).__name__}: {str(exc)[:200]}): {describe_body(message.body)}"
        ) from None


def _decode(message: Any, receipt: object) -> Envelope:
    body: bytes = message.body
    props = message.header.properties
    try:
        payload = json.loads(body)
    except Exception as exc:  # whatever the reason (RecursionError too): never jam the consumer
        raise MalformedMessage(
            f"malformed message (body is not JSON: {type(exc).__name__}: {str(exc)[:200]}): "
            f"{describe_body(body)}"
        ) from None
    headers = props.headers or {}
    attempts = headers.get(H_ATTEMPTS, 0)
    enqueued_at = headers.get(H_ENQUEUED_AT)
    error = headers.get(H_ERROR)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0:
        raise MalformedMessage(f"malformed message: header {H_ATTEMPTS} must be a non-negative integer, "
                               f"got {attempts!r}")  # fmt: skip
    if enqueued_at is None:
        stamp = props.timestamp  # a datetime, when another client set it
        enqueued_at = stamp.timestamp() if stamp is not None else 0.0
    elif isinstance(enqueued_at, bool) or not isinstance(enqueued_at, int):
        raise MalformedMessage(
            f"malformed message: header {H_ENQUEUED_AT} must be integer microseconds, got {enqueued_at!r}"
        )
    else:
        enqueued_at /= 1_000_000
    if error is not None and not isinstance(error, str):
        error = error.decode(errors="replace") if isinstance(error, bytes) else str(error)
    lost = headers.get(H_DELIVERY_COUNT, 0)
    if isinstance(lost, bool) or not isinstance(lost, int) or lost < 0:
        raise MalformedMessage(f"malformed message: header {H_DELIVERY_COUNT} must be a non-negative integer")
    priority = min(props.priority or 0, MAX_PRIORITY)  # the queue caps it at its maximum: so do we
    message_id = props.message_id or f"amqp-{os.urandom(8).hex()}"
    return Envelope(message_id, payload, attempts, priority, float(enqueued_at), error, receipt, lost)


def death_reason(headers: dict[str, Any]) -> str:
    """Why RabbitMQ itself dead-lettered a message (its ``x-death`` header),
    for a dead letter that carries no error of ours; "" if it did not."""
    deaths = headers.get("x-death")
    if not isinstance(deaths, list) or not deaths or not isinstance(deaths[0], dict):
        return ""
    death = deaths[0]
    reason = death.get("reason", "")
    reason = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
    queue = death.get("queue", "")
    queue = queue.decode(errors="replace") if isinstance(queue, bytes) else str(queue)
    if reason == "delivery_limit":
        return (
            f"DeliveryLimit: queue {queue} returned it more often than its x-delivery-limit (its "
            "consumers died, lost their connection or released it each time): a poison item, or consumers "
            "that never finish"
        )
    return f"DeadLettered: RabbitMQ dead-lettered it from queue {queue} ({reason})"
