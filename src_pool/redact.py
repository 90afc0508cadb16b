"""Broker URLs without their passwords, for every text a person or a log may see.

src_pool's brokers, limiter and semaphore are configured with URLs such as
``redis://:s3cret@cache:6379/0`` or ``amqp://app:s3cret@mq:5672/``. The
password must never reach a log line, an exception or a ``repr``:
:func:`redact_url` masks it (and secret query parameters such as
``?password=``), and :func:`scrub` removes it from text a client library
wrote (an exception may quote the URL it failed to reach, or the password
itself). :func:`error_text` is the one way an error becomes text here.

(qhealth has the same need for its sidecar and exporters and keeps its own
copy: src_pool depends on qhealth's public API only.)
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

MASK = "***"
_SECRET_PARAMS = frozenset({"password", "pass", "passwd", "token", "secret", "auth"})


def _secrets(url: str) -> list[str]:
    """Every spelling of every secret in ``url``, raw and URL-unquoted."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return []
    found = [password, unquote(password)] if password else []
    found += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() in _SECRET_PARAMS]
    return [secret for secret in found if secret]


def redact_url(url: str) -> str:
    """``url`` with its password and secret query parameters replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:{MASK}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, url: str) -> str:
    """``text`` with every secret of ``url`` replaced by ``***``."""
    for secret in sorted(_secrets(url), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def error_text(exc: BaseException, url: str) -> str:
    """``"TypeName: message"`` for ``exc``, the secrets of ``url`` masked."""
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:  # a __str__ that raises
        text = f"{type(exc).__name__}: <unprintable>"
    return scrub(text, url)
