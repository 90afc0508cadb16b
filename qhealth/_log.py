"""Logging that cannot flood: one record per key per interval.

Instrumentation runs inside someone else's pool. When an exporter or a depth
source fails, it fails on every tick (or every item): logging each failure
would bury the pool's own logs. :class:`ThrottledLog` logs the first failure
of each kind, then at most one per interval with the number suppressed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("qhealth")


class ThrottledLog:
    def __init__(
        self,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger = logger,
    ) -> None:
        self._interval = interval_s
        self._clock = clock
        self._log = log
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def exception(self, key: str, message: str, *args: object) -> bool:
        """Log ``message`` with the current exception, unless ``key`` was
        logged less than an interval ago. Returns whether it logged."""
        return self._emit(key, logging.ERROR, message, args, exc_info=True)

    def warning(self, key: str, message: str, *args: object) -> bool:
        return self._emit(key, logging.WARNING, message, args, exc_info=False)

    def _emit(self, key: str, level: int, message: str, args: tuple[object, ...], exc_info: bool) -> bool:
        now = self._clock()
        with self._lock:
            if now < self._next.get(key, -float("inf")):
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._next[key] = now + self._interval
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        self._log.log(level, message, *args, exc_info=exc_info)
        return True
