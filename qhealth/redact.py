"""Connection URLs without their secrets: one masking for qhealth and src_pool.

Brokers, sidecars and exporters are configured with URLs such as
``redis://:s3cret@cache:6379/0``. The password must never reach a log line,
an error, a metric or a ``repr``::

    from qhealth.redact import error_text, redact_url

    log.warning("cannot reach %s: %s", redact_url(url), error_text(exc, url))

:func:`redact_url` masks the password and secret query parameters
(``?password=``, ``?token=``); :func:`scrub` removes the secrets of a URL from
text a client library wrote (an exception may quote the URL, or the password
alone); :func:`error_text` is an exception as text with both done.
"""

from ._redact import MASK, error_text, redact_url, scrub, scrub_urls

__all__ = ["MASK", "error_text", "redact_url", "scrub", "scrub_urls"]
