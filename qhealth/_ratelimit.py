"""Recognising "rate limited" answers, whatever HTTP client raised them.

One detector for every integration: an exception counts as rate limited when
it, or the response it carries, has status 429. The attribute names cover the
clients people use: ``status_code`` (httpx, requests' ``response``, openai,
anthropic), ``status`` (aiohttp's ``ClientResponseError``), ``code`` (urllib's
``HTTPError``), and ``response.status_code`` / ``response.status``. Exceptions
chained with ``raise ... from`` are followed a few levels down.

``Retry-After`` is read from the same places, in seconds or as an HTTP date.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping

RATE_LIMITED_STATUS = 429
_STATUS_ATTRIBUTES = ("status_code", "status", "code", "http_status")
_MAX_CHAIN = 4
#: A Retry-After beyond this is treated as this: a typo or an hour-long ban
#: must not park a worker forever.
MAX_RETRY_AFTER_S = 3600.0


def _status_of(obj: object) -> int | None:
    for name in _STATUS_ATTRIBUTES:
        try:
            value = getattr(obj, name, None)
        except Exception:  # a property that raises: not our problem
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < _MAX_CHAIN and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an exception carries (on itself or its response), if any."""
    for error in _chain(exc):
        status = _status_of(error)
        if status is None:
            status = _status_of(getattr(error, "response", None))
        if status is not None:
            return status
    return None


def is_rate_limited(exc: BaseException) -> bool:
    """Whether an exception means "rate limited" (HTTP 429)."""
    return http_status(exc) == RATE_LIMITED_STATUS


def _headers_of(obj: object) -> Mapping[str, str] | None:
    headers = getattr(obj, "headers", None)
    if headers is None:
        headers = getattr(getattr(obj, "response", None), "headers", None)
    return headers if isinstance(headers, Mapping) or hasattr(headers, "get") else None


def parse_retry_after(value: str | float | int | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP date)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(text)
            except (TypeError, ValueError):
                return None
            seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def retry_after_s(exc: BaseException) -> float | None:
    """The ``Retry-After`` an exception carries, in seconds, if any.

    Looks at a ``retry_after`` attribute first (some SDKs parse it for you),
    then at the ``Retry-After`` header of the exception or its response.
    """
    for error in _chain(exc):
        direct = getattr(error, "retry_after", None)
        if isinstance(direct, int | float | str) and not isinstance(direct, bool):
            parsed = parse_retry_after(direct)
            if parsed is not None:
                return parsed
        headers = _headers_of(error)
        if headers is not None:
            try:
                raw = headers.get("Retry-After") or headers.get("retry-after")
            except Exception:
                raw = None
            parsed = parse_retry_after(raw)
            if parsed is not None:
                return parsed
    return None
