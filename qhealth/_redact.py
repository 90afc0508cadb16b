"""Broker URLs without their secrets, for anything a person or a log may see.

Sidecars, brokers and exporters are configured with URLs such as
``redis://:s3cret@cache:6379/0``, ``amqp://app:s3cret@mq//`` or an OTLP endpoint
with credentials. The password must never reach a log line, an error
message, a metric or the terminal: :func:`redact_url` replaces it (and any
token passed as a query parameter) with ``***``, and :func:`scrub` removes it
from text that a client library produced (an exception message may quote the
URL it failed to reach).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

MASK = "***"
_SECRET_PARAMS = frozenset({"password", "pass", "passwd", "token", "secret", "auth"})


def _secrets(url: str) -> list[str]:
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found: list[str] = []
    if parts.password:
        found += [parts.password, unquote(parts.password)]
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key.lower() in _SECRET_PARAMS and value:
            found.append(value)
    return [s for s in found if s]


def redact_url(url: str) -> str:
    """The URL with its password and secret query parameters masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    try:
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # a port that is not a number: mask the password in the text as it is
        userinfo, at, hostport = parts.netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{MASK}@{hostport}" if at and ":" in userinfo else parts.netloc
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    netloc = parts.netloc
    if parts.password is not None or parts.username is not None:
        user = parts.username or ""
        shown_host = f"[{host}]" if ":" in host else host
        netloc = f"{user}:{MASK}@{shown_host}" if parts.password is not None else f"{user}@{shown_host}"
        if port is not None:
            netloc += f":{port}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, url: str) -> str:
    """``text`` with every secret of ``url`` replaced by the mask."""
    for secret in sorted(_secrets(url), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@\s]+)@")


def scrub_urls(text: str) -> str:
    """Mask the password of every ``scheme://user:password@`` URL in ``text``:
    for messages from code whose URL is not known (an exception a user's depth
    source raised)."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)


def error_text(exc: BaseException, url: str) -> str:
    """``Type: message`` of ``exc``, the secrets of ``url`` masked (and any
    other ``user:password@`` URL it quotes)."""
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:  # a __str__ that raises
        text = f"{type(exc).__name__}: <unprintable>"
    return scrub_urls(scrub(text, url))


def error_line(exc: BaseException) -> str:
    """``Type: message`` of an exception on one line, passwords masked."""
    text = " ".join(str(exc).split()) or "(no message)"
    return scrub_urls(f"{type(exc).__name__}: {text}")
