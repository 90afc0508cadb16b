"""Logging that cannot flood: one record per key per interval.

A broker that lost its server fails on every round trip, a pool whose broker
is gone on every item: logging each failure would bury the application's own
logs. :class:`ThrottledLog` logs the first failure of each kind, then at most
one per interval, saying how many it held back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class ThrottledLog:
    """Log through ``log``, at most once per ``interval_s`` for each key."""

    def __init__(
        self, interval_s: float, *, log: logging.Logger, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval_s
        self._log = log
        self._clock = clock
        self._lock = threading.Lock()  # the monitor's thread may log too
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, key: str, message: str, *args: object) -> bool:
        """Log ``message`` unless ``key`` was logged within the interval; whether it logged."""
        return self._emit(key, logging.WARNING, message, args, exc_info=False)

    def exception(self, key: str, message: str, *args: object) -> bool:
        """Like :meth:`warning`, at ERROR and with the exception being handled."""
        return self._emit(key, logging.ERROR, message, args, exc_info=True)

    def _emit(self, key: str, level: int, message: str, args: tuple[object, ...], *, exc_info: bool) -> bool:
        now = self._clock()
        with self._lock:
            if now < self._next.get(key, now):
                self._held[key] = self._held.get(key, 0) + 1
                return False
            self._next[key] = now + self._interval
            held = self._held.pop(key, 0)
        if held:
            message += " (%d similar messages held back)"
            args = (*args, held)
        self._log.log(level, message, *args, exc_info=exc_info)
        return True
