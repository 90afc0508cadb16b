"""Connecting to RabbitMQ: lazy import, URLs without their password, what counts as a lost connection.

aio-pika is imported here, inside functions, so that ``import src_pool``
needs nothing optional. A password never leaves this module: every URL that
reaches a log line, an exception or a ``repr`` goes through
:func:`redact_url`, and every error text from the client goes through
:func:`scrub` (aiormq quotes the URL it failed to reach).
"""

from __future__ import annotations

import asyncio
from types import ModuleType
from urllib.parse import urlsplit

from qhealth.redact import redact_url

from .broker import BrokerError

SCHEMES = ("amqp", "amqps")


class RabbitUnavailable(BrokerError):
    """RabbitMQ could not be reached (or refused the login) within the time allowed."""


def import_aio_pika() -> ModuleType:
    """The ``aio_pika`` module, or an ImportError saying what to install."""
    try:
        import aio_pika
    except ImportError as exc:
        raise ImportError(
            "src_pool's RabbitMQ broker requires the aio-pika package installed: "
            "pip install 'qhealth[rabbitmq]'"
        ) from exc
    return aio_pika


def check_url(url: object) -> str:
    """``url`` if it is an amqp:// or amqps:// URL, else a ValueError (password hidden)."""
    if not isinstance(url, str) or not url:
        raise ValueError(f"RabbitMQ url must be a non-empty string, got {type(url).__name__}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError(f"RabbitMQ url cannot be parsed: {redact_url(url)!r}") from None
    if parts.scheme.lower() not in SCHEMES or not parts.hostname:
        raise ValueError(
            f"RabbitMQ url must look like amqp://user:password@host:5672/vhost (or amqps:// for TLS), "
            f"got {redact_url(url)!r}"
        )
    return url


def transient_errors() -> tuple[type[BaseException], ...]:
    """What a lost connection, a closed channel or a restarting server raises."""
    import aiormq.exceptions as amqp

    return (
        ConnectionError,  # aiormq's AMQPConnectionError and ConnectionClosed are ConnectionErrors
        OSError,
        TimeoutError,
        amqp.AMQPChannelError,
        amqp.ChannelInvalidStateError,
        asyncio.InvalidStateError,
    )
