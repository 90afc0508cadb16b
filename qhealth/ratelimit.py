"""Recognising a rate-limited call: one shared detector for every adapter and for src_pool.

An exception means "rate limited" when it carries HTTP status 429, on itself
or on its ``response``, following ``raise ... from`` (as httpx, requests,
aiohttp, openai and anthropic raise them)::

    from qhealth.ratelimit import is_rate_limited, retry_after_s

    except Exception as exc:
        if is_rate_limited(exc):
            await asyncio.sleep(retry_after_s(exc) or 1.0)
"""

from ._ratelimit import http_status, is_rate_limited, parse_retry_after, retry_after_s

__all__ = ["http_status", "is_rate_limited", "parse_retry_after", "retry_after_s"]
