"""Circuit breakers on an injected clock: opening on a failure ratio over a
window with a minimum of calls, skipping during the cooldown, one half-open
probe, closing and reopening, and one breaker per target across reloads."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

import pytest

from sluice.config.schema import CircuitBreakerConfig
from sluice.domain import Event, GenerationParams, Operation, Request
from sluice.providers.base import Adapter, ExchangeObserver
from sluice.resilience.circuit_breaker import (
    UNGUARDED,
    Breakers,
    CircuitBreaker,
    CircuitState,
    Permit,
)
from sluice.resilience.window import SlidingCount
from sluice.routes import Route, Target

CONFIG = CircuitBreakerConfig(failure_ratio=0.5, window=10.0, min_calls=4, cooldown=5.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def calls(breaker: CircuitBreaker, outcomes: Sequence[bool]) -> None:
    """One admitted call per outcome (True: it failed)."""
    for failed in outcomes:
        permit = breaker.admit()
        assert permit is not None
        permit.record(failed)


def opened(clock: Clock) -> CircuitBreaker:
    breaker = CircuitBreaker(CONFIG, clock)
    calls(breaker, [True] * 4)
    assert breaker.state is CircuitState.OPEN
    return breaker


OK, FAIL = False, True


@pytest.mark.parametrize(
    ("outcomes", "state"),
    [
        ([FAIL] * 3, CircuitState.CLOSED),  # below min_calls, whatever the ratio
        ([FAIL] * 4, CircuitState.OPEN),
        ([OK, OK, FAIL, FAIL], CircuitState.OPEN),  # 2/4 reaches 0.5
        ([OK, OK, OK, FAIL], CircuitState.CLOSED),
        ([OK] * 4 + [FAIL] * 3, CircuitState.CLOSED),  # 3/7
        ([OK] * 4 + [FAIL] * 4, CircuitState.OPEN),  # 4/8
        ([FAIL, FAIL, FAIL, OK], CircuitState.CLOSED),  # checked when a call fails
    ],
)
def test_opens_when_the_failure_ratio_is_reached_with_enough_calls(
    outcomes: list[bool], state: CircuitState
) -> None:
    breaker = CircuitBreaker(CONFIG, Clock())
    calls(breaker, outcomes)
    assert breaker.state is state


def test_only_calls_of_the_last_window_count() -> None:
    clock = Clock()
    breaker = CircuitBreaker(CONFIG, clock)
    calls(breaker, [FAIL] * 3)
    clock.now += 10.0
    calls(breaker, [FAIL])  # the first three have left the window: 1 call < min_calls
    states = [breaker.state]
    clock.now += 5.0
    calls(breaker, [FAIL] * 3)  # 4 failures within 10 s
    states.append(breaker.state)
    assert states == [CircuitState.CLOSED, CircuitState.OPEN]


def test_an_open_circuit_skips_every_call_for_the_cooldown() -> None:
    clock = Clock()
    breaker = opened(clock)
    for elapsed in (0.0, 2.5, 4.99):
        clock.now = 1000.0 + elapsed
        assert breaker.state is CircuitState.OPEN
        assert breaker.admit() is None


def test_after_the_cooldown_exactly_one_probe_goes_through() -> None:
    clock = Clock()
    breaker = opened(clock)
    clock.now += 5.0
    assert breaker.state is CircuitState.HALF_OPEN
    probe = breaker.admit()
    assert probe is not None
    assert [breaker.admit() for _ in range(3)] == [None, None, None], "concurrent calls skip"
    assert breaker.state is CircuitState.HALF_OPEN
    probe.record(OK)


def test_a_successful_probe_closes_the_circuit_with_a_fresh_window() -> None:
    clock = Clock()
    breaker = opened(clock)
    clock.now += 5.0
    probe = breaker.admit()
    assert probe is not None
    probe.record(OK)
    assert breaker.state is CircuitState.CLOSED
    calls(breaker, [FAIL] * 3)  # the failures before the probe are forgotten
    assert breaker.state is CircuitState.CLOSED


def test_a_failed_probe_opens_the_circuit_for_another_cooldown() -> None:
    clock = Clock()
    breaker = opened(clock)
    clock.now += 6.0
    probe = breaker.admit()
    assert probe is not None
    probe.record(FAIL)
    assert breaker.state is CircuitState.OPEN
    clock.now += 4.0
    assert breaker.admit() is None
    clock.now += 1.0
    assert breaker.admit() is not None


def test_a_probe_without_a_verdict_lets_the_next_call_probe() -> None:
    clock = Clock()
    breaker = opened(clock)
    clock.now += 5.0
    probe = breaker.admit()
    assert probe is not None
    probe.release()  # the caller went away
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.admit() is not None


def test_a_permit_settles_once() -> None:
    clock = Clock()
    breaker = opened(clock)
    clock.now += 5.0
    probe = breaker.admit()
    assert probe is not None
    probe.record(OK)
    probe.release()
    probe.record(FAIL)
    assert breaker.state is CircuitState.CLOSED


def test_calls_admitted_before_the_circuit_opened_do_not_count_after() -> None:
    clock = Clock()
    breaker = CircuitBreaker(CONFIG, clock)
    late = breaker.admit()
    assert late is not None
    calls(breaker, [FAIL] * 4)
    clock.now += 5.0
    late.record(OK)  # neither closes the circuit nor uses up the probe
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.admit() is not None


def test_sliding_count_forgets_events_older_than_the_window() -> None:
    clock = Clock()
    count = SlidingCount(10.0, clock)
    for _ in range(3):
        count.add()
    clock.now += 5.0
    count.add()
    assert count.total() == 4
    clock.now += 5.0  # the first three are 10 s old
    assert count.total() == 1
    clock.now += 5.0
    assert count.total() == 0
    count.add()
    count.clear()
    assert count.total() == 0


class _NoAdapter(Adapter):
    provider = "openai"

    def stream(
        self,
        request: Request,
        *,
        observer: ExchangeObserver | None = None,
        coalesce_within: float | None = None,
    ) -> AsyncGenerator[Event, None]:
        raise AssertionError("not called")


ADAPTER = _NoAdapter()
A = Target("openai", "a", ADAPTER, index=0)
B = Target("openai", "b", ADAPTER, index=1)


def route(config: CircuitBreakerConfig | None) -> Route:
    return Route("r", Operation.CHAT, (A, B), GenerationParams(), circuit_breaker=config)


def fail(breakers: Breakers, route: Route, target: Target, times: int) -> None:
    for _ in range(times):
        permit = breakers.admit(route, target)
        assert isinstance(permit, Permit)
        permit.record(FAIL)


def test_each_target_has_its_own_breaker() -> None:
    breakers = Breakers(Clock())
    guarded = route(CONFIG)
    fail(breakers, guarded, A, 4)
    assert breakers.state(guarded, A) is CircuitState.OPEN
    assert breakers.admit(guarded, A) is None
    assert breakers.state(guarded, B) is CircuitState.CLOSED
    assert breakers.admit(guarded, B) is not None


def test_a_route_without_a_breaker_admits_every_call() -> None:
    breakers = Breakers(Clock())
    unguarded = route(None)
    fail(breakers, unguarded, A, 20)
    assert breakers.admit(unguarded, A) is UNGUARDED
    assert breakers.state(unguarded, A) is CircuitState.CLOSED


def test_a_reload_keeps_the_state_unless_the_breaker_config_changed() -> None:
    breakers = Breakers(Clock())
    fail(breakers, route(CONFIG), A, 4)
    reloaded = route(CircuitBreakerConfig(**CONFIG.model_dump()))  # equal, not the same object
    assert breakers.state(reloaded, A) is CircuitState.OPEN
    assert breakers.admit(reloaded, A) is None
    changed = route(CONFIG.model_copy(update={"cooldown": 60.0}))
    assert breakers.state(changed, A) is CircuitState.CLOSED
    assert breakers.admit(changed, A) is not None
    assert breakers.state(route(None), A) is CircuitState.CLOSED
