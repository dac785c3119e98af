"""Circuit breakers: stop calling a target that keeps failing.

A breaker is CLOSED while calls flow. When `failure_ratio` of the calls that
ended in the last `window` seconds failed, with at least `min_calls` of them,
it OPENs: the target is skipped for `cooldown` seconds. Then it is HALF_OPEN:
one probe call goes through while every other call still skips it; the probe's
success closes the breaker with a fresh window, its failure opens it again.

A call holds a `Permit` from admission to its end and settles it once: a
verdict with `record`, or none with `release` (the caller went away, so the
target proved nothing).
"""

from __future__ import annotations

import enum
import time

from sluice.config.schema import CircuitBreakerConfig
from sluice.resilience.window import Clock, SlidingCount
from sluice.routes import Route, Target


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Permit:
    """Leave for one call to a target."""

    __slots__ = ("_breaker", "_probe")

    def __init__(self, breaker: CircuitBreaker | None, probe: bool) -> None:
        self._breaker = breaker
        self._probe = probe

    def record(self, failed: bool) -> None:
        """The call ended: it failed through the target's fault, or not."""
        if self._breaker is not None:
            self._breaker.settle(self._probe, failed)
            self._breaker = None

    def release(self) -> None:
        """End without a verdict, unless `record` gave one."""
        if self._breaker is not None:
            self._breaker.settle(self._probe, None)
            self._breaker = None


# Routes without a circuit breaker admit every call.
UNGUARDED = Permit(None, probe=False)


class CircuitBreaker:
    """The breaker of one target."""

    def __init__(self, config: CircuitBreakerConfig, clock: Clock = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._calls = SlidingCount(config.window, clock)
        self._failures = SlidingCount(config.window, clock)
        self._opened_at: float | None = None  # None while closed
        self._probing = False

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._clock() - self._opened_at < self.config.cooldown:
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN

    def admit(self) -> Permit | None:
        """A permit for one call, or None: skip the target."""
        state = self.state
        if state is CircuitState.CLOSED:
            return Permit(self, probe=False)
        if state is CircuitState.HALF_OPEN and not self._probing:
            self._probing = True
            return Permit(self, probe=True)
        return None

    def settle(self, probe: bool, failed: bool | None) -> None:
        """Take the end of a call: `failed` is None when it gave no verdict."""
        if probe:
            self._probing = False
            if failed:
                self._opened_at = self._clock()
            elif failed is not None:
                self._opened_at = None
                self._calls.clear()
                self._failures.clear()
            return
        # A call admitted before the breaker opened no longer counts.
        if failed is None or self._opened_at is not None:
            return
        self._calls.add()
        if failed:
            self._failures.add()
            calls = self._calls.total()
            if (
                calls >= self.config.min_calls
                and self._failures.total() >= self.config.failure_ratio * calls
            ):
                self._opened_at = self._clock()


class Breakers:
    """The breaker of every target of every route, shared by all calls.

    It holds no config of its own, so one instance outlives config reloads: a
    target keeps its breaker while its route name, index, label and breaker
    config stay the same; a changed config starts a fresh breaker."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._breakers: dict[tuple[str, int, str], CircuitBreaker] = {}

    def admit(self, route: Route, target: Target) -> Permit | None:
        """A permit for one call to `target`, or None: its circuit is open."""
        config = route.circuit_breaker
        if config is None:
            return UNGUARDED
        key = (route.name, target.index, target.label)
        breaker = self._breakers.get(key)
        if breaker is None or not _same(breaker, config):
            breaker = self._breakers[key] = CircuitBreaker(config, self._clock)
        return breaker.admit()

    def state(self, route: Route, target: Target) -> CircuitState:
        config = route.circuit_breaker
        breaker = self._breakers.get((route.name, target.index, target.label))
        if config is None or breaker is None or not _same(breaker, config):
            return CircuitState.CLOSED
        return breaker.state


def _same(breaker: CircuitBreaker, config: CircuitBreakerConfig) -> bool:
    if breaker.config is config:
        return True
    if breaker.config != config:
        return False
    breaker.config = config  # the same settings from a reloaded config: compare by identity next
    return True
