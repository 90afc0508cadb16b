"""Job functions the real worker processes of the integration tests run.

They succeed, fail, raise an exception that carries HTTP status 429, or hang
(a worker that takes an item and never finishes it). Importable by RQ, arq and
Celery workers (the tests put the project root on ``PYTHONPATH``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any


class TooManyRequests(Exception):
    """What an HTTP client raises when the API answers 429."""

    def __init__(self, message: str = "429 Too Many Requests") -> None:
        super().__init__(message)
        self.status_code = 429


def ok(x: int = 0) -> int:
    return x


def fail() -> None:
    raise ValueError("this item is bad")


def limited() -> None:
    raise TooManyRequests()


def hang(seconds: float = 60.0) -> None:
    time.sleep(seconds)


# -- arq: coroutines that take the job context first ---------------------------------


async def arq_ok(ctx: dict[str, Any], x: int = 0) -> int:
    return x


async def arq_fail(ctx: dict[str, Any]) -> None:
    raise ValueError("this item is bad")


async def arq_limited(ctx: dict[str, Any]) -> None:
    raise TooManyRequests()


async def arq_hang(ctx: dict[str, Any], seconds: float = 60.0) -> None:
    await asyncio.sleep(seconds)
