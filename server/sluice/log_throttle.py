"""Rate-limited logging, for causes a caller can repeat at will: a line per
cause at most once per interval, so a flood of bad requests cannot flood
the log. The lines held back are counted and told with the next one."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

# Causes tracked apart; past this many, the rest share one entry, so the
# table stays small whatever callers send.
MAX_CAUSES = 256
_OTHER = "<other causes>"


class ThrottledLog:
    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        # cause -> (when its last line was logged, lines held back since)
        self._causes: dict[str, tuple[float, int]] = {}

    def report(self, cause: str, message: str, *args: object) -> None:
        """Log `message % args` as a warning (never with a traceback),
        unless `cause` was logged within the interval."""
        if cause not in self._causes and len(self._causes) >= MAX_CAUSES:
            cause = _OTHER
        now = self._clock()
        last = self._causes.get(cause)
        if last is not None and now - last[0] < self._interval:
            self._causes[cause] = (last[0], last[1] + 1)
            return
        held_back = last[1] if last is not None else 0
        self._causes[cause] = (now, 0)
        if held_back:
            message += f" (and {held_back} more like it in the last {self._interval:.0f}s)"
        self._logger.warning(message, *args)
