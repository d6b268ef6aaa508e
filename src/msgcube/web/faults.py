"""Logging faults without flooding the log: the first with its traceback, then a count.

A database that is down or a full disk makes every request and every background round
fail the same way, thousands of times a minute. ``FaultLog`` writes the first failure
of a kind with its traceback, then at most one line per ``interval`` seconds with the
number of failures since, and one line when the kind stops failing (``recovered``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from msgcube.web.access_log import printable

INTERVAL = 10.0
"""Seconds between two "still failing" lines of one kind of fault."""


@dataclass
class _Streak:
    first: float
    reported: float
    since_report: int = 0
    total: int = 1


class FaultLog:
    """Per-process throttle of fault reports, keyed by where and what failed."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = logger
        self.interval = interval
        self.clock = clock
        self._streaks: dict[str, _Streak] = {}
        self._lock = threading.Lock()

    @property
    def failing(self) -> bool:
        """Whether a streak is open (read without the lock: a hint for the fast path)."""
        return bool(self._streaks)

    def failed(self, where: str, exc: BaseException) -> None:
        """Report one failure of ``where`` (a request family or a background job)."""
        key = f"{where}: {type(exc).__name__}"
        now = self.clock()
        with self._lock:
            streak = self._streaks.get(key)
            if streak is None:
                self._streaks[key] = _Streak(first=now, reported=now)
                first = True
            else:
                first = False
                streak.since_report += 1
                streak.total += 1
                due = now - streak.reported >= self.interval
                count = streak.since_report
                if due:
                    streak.reported, streak.since_report = now, 0
        if first:
            self.log.error("%s failed: %s", where, printable(str(exc)), exc_info=exc)
        elif due:
            self.log.error(
                "%s still failing: %d more %s in the last %.0f s (%s)",
                where,
                count,
                type(exc).__name__,
                self.interval,
                printable(str(exc)),
            )

    def succeeded(self, where: str) -> None:
        """Close the streaks of ``where``, saying how many failures they counted."""
        if not self._streaks:
            return
        prefix = f"{where}: "
        with self._lock:
            ended = {k: s for k, s in self._streaks.items() if k.startswith(prefix)}
            for key in ended:
                del self._streaks[key]
        now = self.clock()
        for key, streak in ended.items():
            self.log.warning(
                "%s recovered after %d failures in %.1f s", key, streak.total, now - streak.first
            )


faults = FaultLog(logging.getLogger("msgcube.errors"))
"""The process's fault log: web requests and the background jobs share it."""
