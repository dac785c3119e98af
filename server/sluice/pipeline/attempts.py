"""The pipeline's endpoint: answer a call from its route's targets, with
retries, fallback, circuit breakers and timeouts, reporting every attempt.

Targets are tried in the order `selection.order_targets` gives. A target
whose circuit is open is skipped (when all are, the call is UNAVAILABLE,
reason CIRCUIT_OPEN). Otherwise it gets up to `retries.max_attempts` tries,
each bounded by the target's timeouts:

- a retryable failure (UNAVAILABLE, an upstream 429, an upstream timeout) is
  retried on the same target after a backoff with full jitter, never sooner
  than the upstream's Retry-After, while the route's retry budget allows; a
  Retry-After beyond `backoff.max` moves on to the next target at once;
- any other failure of the target (its key rejected, its model missing)
  moves on to the next target;
- INVALID_ARGUMENT (the request itself is wrong) stops: every target would
  refuse it.

An attempt commits when its first event after the `Start` reaches the
caller. The `Start` alone is held back until then, so a target that opens its
stream and then fails or stalls before answering can still be retried or
replaced, and the caller's `Start` names the target that answers. Once
committed, a failure ends the stream with its status: never a second answer
spliced in, never a silent close.

Every attempt is recorded (in `Call.attempts`, the target that answered in
`Call.answered_by`). A success reports them in `Finish.attempts`; a failed
call's error carries them as JSON in its ErrorInfo metadata (`attempts`), and
is the last attempt's error. Each attempt is also an `UpstreamSpan`, and the
time spent waiting on upstreams and backing off is added to the call's
`upstream_seconds`, so the gateway's own overhead can be told apart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing

from sluice.domain import AttemptOutcome, AttemptRecord, Event, Finish, Start
from sluice.errors import GatewayError, Status, upstream_protocol_error
from sluice.pipeline.call import Call
from sluice.pipeline.selection import TargetStats, order_targets
from sluice.resilience.backoff import retry_delay
from sluice.resilience.circuit_breaker import Breakers, Permit
from sluice.resilience.retry_budget import RetryBudget
from sluice.resilience.timeouts import UPSTREAM_TIMEOUT, bounded
from sluice.routes import Route, Target
from sluice.telemetry.semconv import ROUTE, TARGET
from sluice.telemetry.upstream import UpstreamSpan


class Attempts:
    """The endpoint. Each call brings its route, so nothing here belongs to
    one config: the gateway hands `breakers` on across reloads, while retry
    budgets (10 s windows) simply start afresh with a new config."""

    def __init__(
        self, breakers: Breakers, stats: TargetStats, rng: random.Random | None = None
    ) -> None:
        self._breakers = breakers
        self._stats = stats
        self._budgets: dict[str, RetryBudget] = {}
        self._rng = rng or random.Random()

    async def __call__(self, call: Call) -> AsyncGenerator[Event, None]:
        route = call.route
        assert route is not None, "the routing stage runs before the attempts"
        budget = self._budget(route)
        attempts = call.attempts
        error: GatewayError | None = None
        for target in order_targets(route, call, self._stats):
            if attempts:
                call.trace.telemetry.instruments.fallbacks.add(
                    1, {ROUTE: route.name, TARGET: target.label}
                )
            for retry in range(route.retries.max_attempts):
                if retry and not await self._wait_to_retry(call, route, budget, error, retry - 1):
                    break
                permit = self._breakers.admit(route, target)
                if permit is None:
                    attempts.append(
                        AttemptRecord(target.label, target.index, AttemptOutcome.SKIPPED, 0.0)
                    )
                    break
                started = time.monotonic()
                committed = False
                upstream = UpstreamSpan(
                    call.trace, route.name, target, call.request, attempt=len(attempts) + 1
                )
                try:
                    stream = target.adapter.stream(call.request, observer=upstream)
                    async with aclosing(
                        bounded(stream, target.timeouts, target.provider)
                    ) as events:
                        held: Start | None = None
                        async for event in events:
                            upstream.received(event)
                            if committed:
                                yield (
                                    _reporting_finish(event, attempts, target, started)
                                    if isinstance(event, Finish)
                                    else event
                                )
                            elif held is None and isinstance(event, Start):
                                held = dataclasses.replace(
                                    event, provider=target.provider, route=route.name
                                )
                            else:
                                committed = True
                                self._commit(call, target, started)
                                if held is not None:
                                    yield held
                                yield event
                            upstream.awaiting()
                        if not committed:
                            raise upstream_protocol_error(
                                target.provider, "the stream ended before any answer"
                            )
                except GatewayError as exc:
                    upstream.end(exc)
                    _fail(exc, committed, permit, _record(target, exc, started), attempts)
                    error = exc
                    if not _retryable(exc):
                        break
                else:
                    upstream.end()
                    permit.record(failed=False)
                    if not attempts or attempts[-1].outcome is not AttemptOutcome.SUCCESS:
                        # A stream that ended with no Finish to report it on.
                        attempts.append(_record(target, AttemptOutcome.SUCCESS, started))
                    return
                finally:
                    upstream.end(cancelled=True)  # left early: ends only if nothing above did
                    permit.release()
        raise _reporting(error or _no_target(route), attempts)

    async def _wait_to_retry(
        self, call: Call, route: Route, budget: RetryBudget, error: GatewayError | None, retry: int
    ) -> bool:
        """Back off before retry number `retry`; False: do not retry."""
        assert error is not None, "only a failed attempt is retried"
        delay = retry_delay(retry, route.retries.backoff, error.retry_after, self._rng)
        if delay is None or not budget.try_spend(route.retries.budget):
            return False
        call.trace.telemetry.instruments.retries.add(1, {ROUTE: route.name})
        # Waiting on the upstream's behalf: not time spent in the gateway.
        call.trace.upstream_seconds += delay
        await asyncio.sleep(delay)
        return True

    def _commit(self, call: Call, target: Target, started: float) -> None:
        """`target`'s answer reaches the caller: it answers the call."""
        call.answered_by = target
        self._stats.record_ttft(target, time.monotonic() - started)

    def _budget(self, route: Route) -> RetryBudget:
        """The route's retry budget, with this call counted."""
        budget = self._budgets.get(route.name)
        if budget is None:
            budget = self._budgets[route.name] = RetryBudget()
        budget.record_call()
        return budget


def _retryable(error: GatewayError) -> bool:
    """Worth another try on the same target: it may answer next time."""
    return error.status is Status.UNAVAILABLE or error.reason in (
        "UPSTREAM_RATE_LIMITED",
        UPSTREAM_TIMEOUT,
    )


def _record(
    target: Target, outcome: AttemptOutcome | GatewayError, started: float
) -> AttemptRecord:
    """The record of an attempt begun at `started` that ended now: with
    `outcome`, or failed with an error."""
    duration = time.monotonic() - started
    if isinstance(outcome, AttemptOutcome):
        return AttemptRecord(target.label, target.index, outcome, duration)
    return AttemptRecord(
        target.label,
        target.index,
        AttemptOutcome.TIMEOUT if outcome.reason == UPSTREAM_TIMEOUT else AttemptOutcome.FAILURE,
        duration,
        f"{outcome.status.name}: {outcome.message}",
    )


def _fail(
    error: GatewayError,
    committed: bool,
    permit: Permit,
    record: AttemptRecord,
    attempts: list[AttemptRecord],
) -> None:
    """Record a failed attempt; raise its error when the call cannot go on:
    the caller already has part of this answer, or the request is at fault."""
    invalid = error.status is Status.INVALID_ARGUMENT
    permit.record(failed=not invalid)
    attempts.append(record)
    if committed or invalid:
        raise _reporting(error, attempts) from None


def _reporting_finish(
    finish: Finish, attempts: list[AttemptRecord], target: Target, started: float
) -> Finish:
    """`finish`, reporting the call's attempts, this successful one recorded
    last."""
    attempts.append(_record(target, AttemptOutcome.SUCCESS, started))
    return dataclasses.replace(finish, attempts=tuple(attempts))


# Each attempt's error is cut to this in ErrorInfo: the details travel in a
# trailer, and clients refuse metadata beyond 8 KiB by default.
ERROR_INFO_CHARS = 160


def _reporting(error: GatewayError, attempts: list[AttemptRecord]) -> GatewayError:
    """`error`, its ErrorInfo metadata listing the call's attempts."""
    error.metadata["attempts"] = json.dumps(
        [
            {
                "target": a.target,
                "target_index": a.target_index,
                "outcome": a.outcome.value,
                "duration": round(a.duration, 3),
                **({"error": a.error[:ERROR_INFO_CHARS]} if a.error else {}),
            }
            for a in attempts
        ],
        separators=(",", ":"),
    )
    return error


def _no_target(route: Route) -> GatewayError:
    return GatewayError(
        Status.UNAVAILABLE,
        "CIRCUIT_OPEN",
        f"every target of route {route.name!r} is unavailable: its circuit breaker is open",
        metadata={"route": route.name},
    )
