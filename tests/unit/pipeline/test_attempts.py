"""The attempts endpoint with scripted adapters: retries with backoff and
Retry-After, the retry budget, fallback before the answer is committed and
never after, timeouts, circuit breakers, and the attempt records."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing

import pytest

from sluice.config.schema import (
    BackoffConfig,
    CircuitBreakerConfig,
    RetriesConfig,
    TimeoutsConfig,
)
from sluice.domain import (
    AttemptOutcome,
    AttemptRecord,
    ChatRequest,
    Event,
    Finish,
    FinishReason,
    GenerationParams,
    Message,
    Operation,
    Request,
    Role,
    Start,
    TextDelta,
    TextPart,
    Usage,
)
from sluice.errors import (
    GatewayError,
    Status,
    invalid_argument,
    upstream_http_error,
    upstream_unreachable,
)
from sluice.pipeline import Call, build_pipeline
from sluice.pipeline.attempts import Attempts
from sluice.pipeline.selection import TargetStats
from sluice.pipeline.variants import Variants
from sluice.providers.base import Adapter, ExchangeObserver
from sluice.resilience.backoff import retry_delay
from sluice.resilience.circuit_breaker import Breakers, CircuitState
from sluice.resilience.retry_budget import RetryBudget
from sluice.routes import Route, Target
from tests.timing import TIMER_RESOLUTION

# A script step: an event to yield, an error to raise, or seconds to stall.
Step = Event | GatewayError | float

ANSWER: tuple[Step, ...] = (
    Start("resp-1", "m"),
    TextDelta("Hel"),
    TextDelta("lo"),
    Usage(3, 2),
    Finish(FinishReason.STOP, "stop"),
)
REQUEST = ChatRequest("r", (Message(Role.USER, (TextPart("hi"),)),))
FAST_BACKOFF = BackoffConfig(initial=0.01, max=0.05)
TOLERANCE = 0.15  # seconds a timing may run over on a busy machine


class Scripted(Adapter):
    """Plays one script per call, the last one again once they run out."""

    provider = "openai"

    def __init__(self, *scripts: Sequence[Step]) -> None:
        self._scripts = scripts
        self.calls = 0
        self.closed = 0

    async def stream(
        self,
        request: Request,
        *,
        observer: ExchangeObserver | None = None,
        coalesce_within: float | None = None,
    ) -> AsyncGenerator[Event, None]:
        script = self._scripts[min(self.calls, len(self._scripts) - 1)]
        self.calls += 1
        try:
            for step in script:
                if isinstance(step, GatewayError):
                    raise fresh(step)
                if isinstance(step, float):
                    await asyncio.sleep(step)
                else:
                    yield step
        finally:
            self.closed += 1


def fresh(error: GatewayError) -> GatewayError:
    """A copy of `error`: a script may raise it more than once."""
    return GatewayError(
        error.reason,
        error.message,
        metadata=error.metadata,
        field=error.field,
        retry_after=error.retry_after,
    )


def unavailable() -> GatewayError:
    return upstream_http_error("openai", 500, "boom")


def rate_limited(retry_after: float | None) -> GatewayError:
    return upstream_http_error("openai", 429, "slow down", retry_after=retry_after)


def target(index: int, adapter: Adapter, **timeouts: float) -> Target:
    return Target("openai", f"m{index}", adapter, index=index, timeouts=TimeoutsConfig(**timeouts))


def chat_route(
    *targets: Target,
    max_attempts: int = 1,
    backoff: BackoffConfig = FAST_BACKOFF,
    budget: float = 1.0,
    breaker: CircuitBreakerConfig | None = None,
) -> Route:
    return Route(
        "r",
        Operation.CHAT,
        targets,
        GenerationParams(),
        retries=RetriesConfig(max_attempts=max_attempts, backoff=backoff, budget=budget),
        circuit_breaker=breaker,
    )


def endpoint(stats: TargetStats | None = None, breakers: Breakers | None = None) -> Attempts:
    return Attempts(breakers or Breakers(), stats or TargetStats(), random.Random(7))


def planned(route: Route) -> Call:
    """A call as the variants stage leaves it, its targets in config order."""
    return Call(REQUEST, {}, route=route, targets=list(route.targets), routed=REQUEST)


async def run(
    route: Route, attempts: Attempts | None = None
) -> tuple[list[Event], GatewayError | None]:
    events: list[Event] = []
    # The variants stage chooses the order the endpoint tries (config order here).
    handler = build_pipeline([Variants(TargetStats())], attempts or endpoint())
    try:
        async with aclosing(handler(Call(REQUEST, {}, route=route))) as stream:
            async for event in stream:
                events.append(event)
    except GatewayError as error:
        return events, error
    return events, None


def outcomes(records: Sequence[AttemptRecord]) -> list[tuple[int, AttemptOutcome, str]]:
    return [(r.target_index, r.outcome, r.error) for r in records]


def reported(error: GatewayError) -> list[dict[str, object]]:
    """The attempts a failed call's ErrorInfo metadata carries."""
    value: list[dict[str, object]] = json.loads(error.metadata["attempts"])
    return value


async def test_a_first_try_success_streams_the_answer_and_one_attempt() -> None:
    adapter = Scripted(ANSWER)
    events, error = await run(chat_route(target(0, adapter)))
    assert error is None
    assert events[0] == Start("resp-1", "m", "openai", "r", variant="openai/m0")
    assert events[1:4] == list(ANSWER[1:4])
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert (finish.reason, finish.provider_reason) == (FinishReason.STOP, "stop")
    assert outcomes(finish.attempts) == [(0, AttemptOutcome.SUCCESS, "")]
    assert finish.attempts[0].target == "openai/m0"
    assert 0 <= finish.attempts[0].duration < TOLERANCE
    assert (adapter.calls, adapter.closed) == (1, 1)


async def test_a_retryable_failure_is_retried_on_the_same_target() -> None:
    adapter = Scripted([unavailable()], ANSWER)
    events, error = await run(chat_route(target(0, adapter), max_attempts=3))
    assert error is None
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert outcomes(finish.attempts) == [
        (0, AttemptOutcome.FAILURE, "UNAVAILABLE: openai: boom"),
        (0, AttemptOutcome.SUCCESS, ""),
    ]
    assert sum(isinstance(e, Start) for e in events) == 1
    assert adapter.calls == 2


async def test_retries_stop_at_max_attempts_and_the_last_error_is_raised() -> None:
    adapter = Scripted([unavailable()])
    _, error = await run(chat_route(target(0, adapter), max_attempts=3))
    assert error is not None
    assert (error.status, error.reason) == (Status.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")
    assert adapter.calls == 3
    assert [(a["target"], a["target_index"], a["outcome"]) for a in reported(error)] == [
        ("openai/m0", 0, "failure")
    ] * 3
    assert reported(error)[0]["error"] == "UNAVAILABLE: openai: boom"


async def test_retry_after_is_honoured_when_within_backoff_max() -> None:
    adapter = Scripted([rate_limited(0.3)], ANSWER)
    backoff = BackoffConfig(initial=0.01, max=1.0)
    started = time.monotonic()
    events, error = await run(chat_route(target(0, adapter), max_attempts=2, backoff=backoff))
    elapsed = time.monotonic() - started
    assert error is None
    assert 0.3 - TIMER_RESOLUTION <= elapsed < 0.3 + TOLERANCE
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert outcomes(finish.attempts)[0] == (
        0,
        AttemptOutcome.FAILURE,
        "RESOURCE_EXHAUSTED: openai: slow down",
    )


async def test_retry_after_beyond_backoff_max_moves_to_the_next_target_at_once() -> None:
    first, second = Scripted([rate_limited(30.0)]), Scripted(ANSWER)
    started = time.monotonic()
    events, error = await run(
        chat_route(target(0, first), target(1, second), max_attempts=3), endpoint()
    )
    assert time.monotonic() - started < TOLERANCE
    assert error is None
    assert (first.calls, second.calls) == (1, 1)
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert [(i, o) for i, o, _ in outcomes(finish.attempts)] == [
        (0, AttemptOutcome.FAILURE),
        (1, AttemptOutcome.SUCCESS),
    ]


async def test_a_failure_after_the_start_falls_back_to_the_next_target() -> None:
    """The Start is held until the first answer, so a target that opens its
    stream and then fails can still be replaced: the caller sees one Start,
    the answering target's."""
    first = Scripted([Start("resp-0", "m0"), unavailable()])
    second = Scripted(ANSWER)
    events, error = await run(chat_route(target(0, first), target(1, second)))
    assert error is None
    # The start names the variant that answered: the fallback.
    starts = [e for e in events if isinstance(e, Start)]
    assert starts == [Start("resp-1", "m", "openai", "r", variant="openai/m1")]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello"
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert outcomes(finish.attempts) == [
        (0, AttemptOutcome.FAILURE, "UNAVAILABLE: openai: boom"),
        (1, AttemptOutcome.SUCCESS, ""),
    ]
    assert first.closed == 1


async def test_no_fallback_after_the_first_chunk_the_stream_ends_with_the_error() -> None:
    first = Scripted([*ANSWER[:2], unavailable()])
    second = Scripted(ANSWER)
    events, error = await run(chat_route(target(0, first), target(1, second), max_attempts=3))
    assert events == [Start("resp-1", "m", "openai", "r", variant="openai/m0"), TextDelta("Hel")]
    assert error is not None
    assert error.status is Status.UNAVAILABLE
    assert second.calls == 0
    assert first.calls == 1, "no retry either"
    assert [a["outcome"] for a in reported(error)] == ["failure"]


@pytest.mark.parametrize(
    ("failure", "fallback"),
    [
        (upstream_http_error("openai", 400, "bad messages"), False),
        (invalid_argument("messages", "no images here"), False),
        (upstream_http_error("openai", 401, "bad key"), True),
        (upstream_http_error("openai", 404, "no such model"), True),
        (upstream_http_error("openai", 402, "out of credit"), True),
    ],
)
async def test_non_retryable_failures_fall_back_unless_the_request_is_at_fault(
    failure: GatewayError, fallback: bool
) -> None:
    first, second = Scripted([failure]), Scripted(ANSWER)
    _, error = await run(chat_route(target(0, first), target(1, second), max_attempts=3))
    assert first.calls == 1, "never retried on the same target"
    assert second.calls == int(fallback)
    assert (error is None) == fallback
    if error is not None:
        assert error.status is Status.INVALID_ARGUMENT
        assert [a["target_index"] for a in reported(error)] == [0]


async def test_every_target_failing_raises_the_last_error_with_every_attempt() -> None:
    first = Scripted([upstream_unreachable("openai", "connection failed: refused")])
    second = Scripted([rate_limited(None)])
    _, error = await run(chat_route(target(0, first), target(1, second), max_attempts=2))
    assert error is not None
    assert (error.status, error.reason) == (Status.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED")
    assert [(a["target_index"], a["outcome"]) for a in reported(error)] == [
        (0, "failure"),
        (0, "failure"),
        (1, "failure"),
        (1, "failure"),
    ]


@pytest.mark.parametrize(
    ("script", "timeouts", "message"),
    [
        # Nothing at all: the connect/headers stall.
        ([0.5], {"first_token": 0.1}, "openai: no first token within 0.1 s"),
        # A Start, then silence.
        ([ANSWER[0], 0.5], {"first_token": 0.1}, "openai: no first token within 0.1 s"),
        ([ANSWER[0], 0.5], {"idle": 0.1}, "openai: no data for 0.1 s"),
        ([ANSWER[0], 0.06, 0.06], {"total": 0.1}, "openai: the attempt took longer than 0.1 s"),
    ],
)
async def test_a_timeout_before_the_first_token_is_retried(
    script: list[Step], timeouts: dict[str, float], message: str
) -> None:
    adapter = Scripted(script, ANSWER)
    started = time.monotonic()
    events, error = await run(chat_route(target(0, adapter, **timeouts), max_attempts=2))
    assert error is None
    assert 0.1 - TIMER_RESOLUTION <= time.monotonic() - started < 0.1 + TOLERANCE
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert outcomes(finish.attempts) == [
        (0, AttemptOutcome.TIMEOUT, f"UNAVAILABLE: {message}"),
        (0, AttemptOutcome.SUCCESS, ""),
    ]
    assert 0.1 - TIMER_RESOLUTION <= finish.attempts[0].duration < 0.1 + TOLERANCE
    assert adapter.closed == 2, "the stalled upstream was closed"


@pytest.mark.parametrize("timeouts", [{"idle": 0.1}, {"total": 0.1}], ids=["idle", "total"])
async def test_a_stall_after_the_first_token_ends_the_stream(timeouts: dict[str, float]) -> None:
    adapter = Scripted([*ANSWER[:2], 0.5, *ANSWER[2:]])
    events, error = await run(chat_route(target(0, adapter, **timeouts), max_attempts=2))
    assert events == [Start("resp-1", "m", "openai", "r", variant="openai/m0"), TextDelta("Hel")]
    assert error is not None
    assert (error.status, error.reason) == (Status.UNAVAILABLE, "UPSTREAM_TIMEOUT")
    assert error.metadata["timeout"] == next(iter(timeouts))
    assert [a["outcome"] for a in reported(error)] == ["timeout"]
    assert (adapter.calls, adapter.closed) == (1, 1)


async def test_timeouts_do_not_count_the_time_the_caller_takes() -> None:
    adapter = Scripted(ANSWER)
    route = chat_route(target(0, adapter, idle=0.05, first_token=0.05))
    events = []
    async with aclosing(endpoint()(planned(route))) as stream:
        async for event in stream:
            events.append(event)
            await asyncio.sleep(0.1)  # a slow caller
    assert isinstance(events[-1], Finish)


async def test_a_budget_of_zero_allows_no_retry() -> None:
    first, second = Scripted([unavailable()]), Scripted(ANSWER)
    _, error = await run(
        chat_route(target(0, first), target(1, second), max_attempts=5, budget=0.0)
    )
    assert error is None
    assert (first.calls, second.calls) == (1, 1), "no retry: straight to the fallback"


async def test_the_retry_budget_is_shared_by_the_routes_calls() -> None:
    adapter = Scripted([unavailable()])
    route = chat_route(target(0, adapter), max_attempts=3, budget=0.2)
    attempts = endpoint()
    for _ in range(3):
        await run(route, attempts)
    # (3 calls + 15 in reserve) x 0.2 = 3.6: three retries in all.
    assert adapter.calls == 3 + 3


async def test_an_open_circuit_is_skipped_and_recorded() -> None:
    breaker = CircuitBreakerConfig(failure_ratio=0.5, window=10, min_calls=2, cooldown=60)
    first, second = Scripted([unavailable()]), Scripted(ANSWER)
    route = chat_route(target(0, first), target(1, second), breaker=breaker)
    breakers = Breakers()
    attempts = endpoint(breakers=breakers)
    for _ in range(2):
        await run(route, attempts)
    assert breakers.state(route, route.targets[0]) is CircuitState.OPEN
    assert breakers.state(route, route.targets[1]) is CircuitState.CLOSED
    events, error = await run(route, attempts)
    assert error is None
    assert first.calls == 2
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert outcomes(finish.attempts) == [
        (0, AttemptOutcome.SKIPPED, ""),
        (1, AttemptOutcome.SUCCESS, ""),
    ]
    assert finish.attempts[0].duration == 0.0


async def test_every_circuit_open_is_unavailable() -> None:
    breaker = CircuitBreakerConfig(failure_ratio=1.0, window=10, min_calls=1, cooldown=60)
    route = chat_route(target(0, Scripted([unavailable()])), breaker=breaker)
    attempts = endpoint()
    await run(route, attempts)
    _, error = await run(route, attempts)
    assert error is not None
    assert (error.status, error.reason) == (Status.UNAVAILABLE, "CIRCUIT_OPEN")
    assert reported(error) == [
        {"target": "openai/m0", "target_index": 0, "outcome": "skipped", "duration": 0.0}
    ]


async def test_a_request_the_upstream_refuses_does_not_count_against_the_target() -> None:
    breaker = CircuitBreakerConfig(failure_ratio=1.0, window=10, min_calls=1, cooldown=60)
    route = chat_route(
        target(0, Scripted([upstream_http_error("openai", 400, "bad")])), breaker=breaker
    )
    breakers = Breakers()
    await run(route, endpoint(breakers=breakers))
    assert breakers.state(route, route.targets[0]) is CircuitState.CLOSED


async def test_a_caller_leaving_closes_the_upstream_and_frees_the_probe() -> None:
    breaker = CircuitBreakerConfig(failure_ratio=1.0, window=10, min_calls=1, cooldown=0.05)
    adapter = Scripted([unavailable()], [*ANSWER[:2], 5.0])
    route = chat_route(target(0, adapter), breaker=breaker)
    breakers = Breakers()
    attempts = endpoint(breakers=breakers)
    await run(route, attempts)
    await asyncio.sleep(0.06)  # the cooldown
    async with aclosing(attempts(planned(route))) as stream:
        assert isinstance(await anext(stream), Start)
        assert await anext(stream) == TextDelta("Hel")
        assert breakers.admit(route, route.targets[0]) is None, "the probe is out"
    assert adapter.closed == 2
    assert breakers.state(route, route.targets[0]) is CircuitState.HALF_OPEN
    assert breakers.admit(route, route.targets[0]) is not None


async def test_the_time_to_first_token_of_each_answer_is_recorded() -> None:
    stats = TargetStats()
    route = chat_route(target(0, Scripted([ANSWER[0], 0.1, *ANSWER[1:]])))
    await run(route, endpoint(stats))
    ttft = stats.ttft(route.targets[0])
    assert ttft is not None
    assert 0.1 - TIMER_RESOLUTION <= ttft < 0.1 + TOLERANCE


async def test_a_stream_without_an_answer_is_a_failure_not_a_silent_close() -> None:
    first, second = Scripted([ANSWER[0]]), Scripted(ANSWER)
    events, error = await run(chat_route(target(0, first), target(1, second)))
    assert error is None
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert outcomes(finish.attempts)[0] == (
        0,
        AttemptOutcome.FAILURE,
        "UNAVAILABLE: openai: the stream ended before any answer",
    )


@pytest.mark.parametrize("retry", range(6))
def test_backoff_is_full_jitter_under_an_exponential_cap(retry: int) -> None:
    backoff = BackoffConfig(initial=0.1, max=2.0)
    cap = min(2.0, 0.1 * 2**retry)
    rng = random.Random(retry)
    delays = [retry_delay(retry, backoff, None, rng) for _ in range(2000)]
    assert all(d is not None and 0.0 <= d <= cap for d in delays)
    floats = [d for d in delays if d is not None]
    assert min(floats) < 0.05 * cap, "spread down to zero"
    assert max(floats) > 0.95 * cap, "and up to the cap"
    assert abs(sum(floats) / len(floats) - cap / 2) < 0.05 * cap


def test_backoff_waits_at_least_retry_after_and_gives_up_beyond_max() -> None:
    backoff = BackoffConfig(initial=0.1, max=2.0)
    rng = random.Random(1)
    assert all(retry_delay(0, backoff, 1.5, rng) == 1.5 for _ in range(100))
    assert retry_delay(3, backoff, 2.0, rng) == 2.0
    assert retry_delay(0, backoff, 2.01, rng) is None


def test_a_retry_budget_allows_its_ratio_of_calls_plus_a_reserve() -> None:
    now = [0.0]
    budget = RetryBudget(lambda: now[0])
    budget.record_call()
    assert [budget.try_spend(0.2) for _ in range(4)] == [True, True, True, False]
    for _ in range(10):
        budget.record_call()  # 11 calls + 15 in reserve: 5.2 retries
    assert [budget.try_spend(0.2) for _ in range(3)] == [True, True, False]
    assert not budget.try_spend(0.0)
    now[0] = 10.0  # everything has left the window
    assert [budget.try_spend(0.2) for _ in range(4)] == [True, True, True, False]
