"""The pipeline's endpoint: answer a call from its route's targets, with
retries, fallback, circuit breakers and timeouts, reporting every attempt.

Targets are tried in the order the variants stage chose (`Call.targets`),
each sent the request as it shapes it (variants.py). A target
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
is the last attempt's error. Each attempt is reported to the call's trace, and the
time spent waiting on upstreams and backing off is added to the call's
`upstream_seconds`, so the gateway's own overhead can be told apart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing

from sluice.domain import AttemptOutcome, AttemptRecord, Event, Finish, Start, Usage
from sluice.errors import GatewayError, Reason, Status, upstream_protocol_error
from sluice.pipeline.call import Call
from sluice.pipeline.selection import TargetStats
from sluice.pipeline.variants import request_for
from sluice.pricing import PriceTable
from sluice.resilience.backoff import retry_delay
from sluice.resilience.circuit_breaker import Breakers, Permit
from sluice.resilience.retry_budget import RetryBudget
from sluice.resilience.timeouts import bounded
from sluice.routes import Route, Target


class Attempts:
    """The endpoint. Each call brings its route, so nothing here belongs to
    one config: the gateway hands `breakers` on across reloads, while retry
    budgets (10 s windows) simply start afresh with a new config."""

    def __init__(
        self,
        breakers: Breakers,
        stats: TargetStats,
        rng: random.Random | None = None,
        *,
        prices: PriceTable | None = None,
    ) -> None:
        self._breakers = breakers
        self._stats = stats
        self._prices = prices or PriceTable()
        self._budgets: dict[str, RetryBudget] = {}
        self._rng = rng or random.Random()

    async def __call__(self, call: Call) -> AsyncGenerator[Event, None]:
        route = call.route
        assert route is not None, "the routing stage runs before the attempts"
        tries = _Tries(call, route, self._budget(route), self._rng)
        for target in tries:
            if tries.delay:
                await asyncio.sleep(tries.delay)
            permit = self._breakers.admit(route, target)
            if permit is None:
                tries.skipped(target)
                continue
            try:
                async with aclosing(self._attempt(call, route, target, permit)) as events:
                    async for event in events:
                        yield event
                return
            except GatewayError as error:
                if call.answered_by is not None or error.status is Status.INVALID_ARGUMENT:
                    # The caller has part of this answer, or every target
                    # would refuse the request: the call ends here.
                    raise _reporting(error, call.attempts) from None
                tries.failed(error)
        raise _reporting(tries.error or _no_target(route), call.attempts)

    async def _attempt(
        self, call: Call, route: Route, target: Target, permit: Permit
    ) -> AsyncGenerator[Event, None]:
        """One attempt at `target`, recorded in `call.attempts`: its events
        from the first answer (any event after the `Start`), which commits
        the call to it; raises its error."""
        started = time.monotonic()
        # The variants stage shaped the call's request for its first choice.
        request = call.request if target is call.targets[0] else request_for(call, target)
        upstream = call.trace.attempt(route.name, target, request, number=len(call.attempts) + 1)
        held: Start | None = None
        try:
            stream = target.adapter.stream(
                request, observer=upstream, coalesce_within=target.coalesce_within
            )
            async with aclosing(bounded(stream, target.timeouts, target.provider)) as events:
                async for event in events:
                    upstream.received(event)
                    if call.answered_by is None:
                        if held is None and isinstance(event, Start):
                            held = dataclasses.replace(
                                event,
                                provider=target.provider,
                                route=route.name,
                                variant=target.variant,
                            )
                            continue
                        self._commit(call, target, started)
                        if held is not None:
                            yield held
                    yield self._passed(call, event, target, started)
                    upstream.awaiting()
            if call.answered_by is None:
                raise upstream_protocol_error(target.provider, "the stream ended before any answer")
        except GatewayError as error:
            upstream.end(error)
            permit.record(failed=error.status is not Status.INVALID_ARGUMENT)
            call.attempts.append(_record(target, error, started))
            raise
        else:
            upstream.end()
            permit.record(failed=False)
            if not call.attempts or call.attempts[-1].outcome is not AttemptOutcome.SUCCESS:
                # A stream that ended with no Finish to report it on.
                call.attempts.append(_record(target, AttemptOutcome.SUCCESS, started))
        finally:
            upstream.end(cancelled=True)  # left early: ends only if nothing above did
            permit.release()

    def _passed(self, call: Call, event: Event, target: Target, started: float) -> Event:
        """An event of the committed attempt on its way to the caller: its
        usage priced (the call's cost, once), its Finish reporting the
        attempts, this successful one last."""
        if isinstance(event, Usage):
            call.cost = self._prices.cost(target.provider, target.model, event)
        elif isinstance(event, Finish):
            call.attempts.append(_record(target, AttemptOutcome.SUCCESS, started))
            return dataclasses.replace(event, attempts=tuple(call.attempts))
        return event

    def _commit(self, call: Call, target: Target, started: float) -> None:
        """`target`'s answer reaches the caller: it answers the call, at a
        cost unknown until its usage arrives."""
        call.answered_by = target
        call.cost = None
        self._stats.record_ttft(target, time.monotonic() - started)

    def _budget(self, route: Route) -> RetryBudget:
        """The route's retry budget, with this call counted."""
        budget = self._budgets.get(route.name)
        if budget is None:
            budget = self._budgets[route.name] = RetryBudget()
        budget.record_call()
        return budget


class _Tries:
    """The targets a call tries, in turn: each in `Call.targets`' order, up
    to `retries.max_attempts` times while its failures are retryable, the
    route's retry budget allows and the backoff fits `backoff.max`. Told how
    each try ended (`failed`, `skipped`); `delay` is the wait before the
    target it gave last."""

    def __init__(
        self,
        call: Call,
        route: Route,
        budget: RetryBudget,
        rng: random.Random,
    ) -> None:
        self._call = call
        self._route = route
        self._budget = budget
        self._rng = rng
        self.delay = 0.0
        self.error: GatewayError | None = None  # the last failure, if any
        self._skipped = False

    def __iter__(self) -> Iterator[Target]:
        call, route = self._call, self._route
        for target in call.targets:
            if call.attempts:
                call.trace.fallback(route.name, target)
            self.delay, self._skipped = 0.0, False
            for retry in range(route.retries.max_attempts):
                yield target
                delay = self._retry_delay(retry)
                if delay is None:
                    break
                self.delay = delay

    def skipped(self, target: Target) -> None:
        """`target`'s circuit is open: on to the next target."""
        self._skipped = True
        self._call.attempts.append(
            AttemptRecord(target.label, target.index, AttemptOutcome.SKIPPED, 0.0)
        )

    def failed(self, error: GatewayError) -> None:
        self.error = error

    def _retry_delay(self, retry: int) -> float | None:
        """The wait before retrying the target after try number `retry`
        (from 0) failed; None: do not retry it."""
        route, error = self._route, self.error
        if self._skipped or error is None or not _retryable(error):
            return None
        if retry + 1 >= route.retries.max_attempts:
            return None
        delay = retry_delay(retry, route.retries.backoff, error.retry_after, self._rng)
        if delay is None or not self._budget.try_spend(route.retries.budget):
            return None
        self._call.trace.retry(route.name)
        self._call.trace.waited(delay)
        return delay


# Beyond UNAVAILABLE: an upstream that refused for now or gave up in time.
_RETRY_SAME_TARGET = frozenset({Reason.UPSTREAM_RATE_LIMITED, Reason.UPSTREAM_HTTP_TIMEOUT})
_TIMEOUTS = frozenset({Reason.UPSTREAM_TIMEOUT, Reason.UPSTREAM_HTTP_TIMEOUT})


def _retryable(error: GatewayError) -> bool:
    """Worth another try on the same target: it may answer next time."""
    return error.status is Status.UNAVAILABLE or error.reason in _RETRY_SAME_TARGET


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
        AttemptOutcome.TIMEOUT if outcome.reason in _TIMEOUTS else AttemptOutcome.FAILURE,
        duration,
        f"{outcome.status.name}: {outcome.message}",
    )


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
        Reason.CIRCUIT_OPEN,
        f"every target of route {route.name!r} is unavailable: its circuit breaker is open",
        metadata={"route": route.name},
    )
