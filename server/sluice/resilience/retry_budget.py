"""Retry budgets: bound the extra load retries put on a route's upstreams.

As in Finagle's RetryBudget, retries over the last `WINDOW` seconds may be at
most `ratio` x the calls in it, counted as if `RESERVE_CALLS` more had been
made, so a quiet route can still retry (3 retries at the default 0.2) while a
failing upstream under load gets ratio x its traffic, not max_attempts x it.
"""

from __future__ import annotations

import time

from sluice.resilience.window import Clock, SlidingCount

WINDOW = 10.0
RESERVE_CALLS = 15


class RetryBudget:
    """The retry budget of one route."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._calls = SlidingCount(WINDOW, clock)
        self._retries = SlidingCount(WINDOW, clock)

    def record_call(self) -> None:
        self._calls.add()

    def try_spend(self, ratio: float) -> bool:
        """Take one retry from the budget; False when it is used up."""
        # The epsilon keeps 0.2 x 15 from rounding below 3.
        allowance = ratio * (self._calls.total() + RESERVE_CALLS) + 1e-9
        if self._retries.total() + 1 > allowance:
            return False
        self._retries.add()
        return True
