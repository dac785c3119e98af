"""Limits stage: requests, tokens and concurrent streams per route and per
API key, and each key's spend budget, counted in shared state.

Scopes: a route's `limits:` count every call to the route (`route:<name>`);
a key's `limits:` and `budget:` count its calls across all its routes
(`key:<name>`). A cache hit counts as a request and holds a stream slot,
but is charged no tokens and no cost.

A call is admitted in three steps, so that a refused call takes nothing:

1. read-only checks, all at once: requests (`check` 1), tokens (`check` the
   estimate), the budget (`total` < usd);
2. a lease per concurrency limit, each lapsing after `lease_seconds` (15
   minutes: longer than any stream should run, so a lease lapses only when
   a replica died holding it); if one is refused, the others are released;
3. `take` one request from each requests limit. A GCRA take cannot be
   undone: if a concurrent call filled one scope between steps 1 and 3, the
   other scopes' takes stand and this call is refused (a residual race,
   bounded by the calls in flight at that instant).

The token estimate is the characters of all text in the request (messages,
tool calls and results, tool definitions; images count nothing) divided by
four, rounded up, plus the request's `max_tokens` when set (the route's
default included). Tokens are charged from the real `Usage` when the stream
ends, also when it failed or was cancelled after a `Usage` arrived; with no
usage reported, nothing is charged. Budgets work the same way: checked
before the call, charged from `PriceTable.cost` after it, so concurrent
calls can overspend a budget by what they cost together. A key with a
budget is refused (FAILED_PRECONDITION) on a route whose model has no price,
rather than spending unmetered.

When shared state is unavailable, the call's scopes decide together: any
`fail_closed` scope refuses it (UNAVAILABLE); otherwise it passes unlimited
and uncharged, and a warning is logged at most once a minute. The budget
follows its key's `failure_policy` (fail_open when the key has no limits).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from sluice.config.periods import Rate
from sluice.config.schema import BudgetConfig, LimitsConfig
from sluice.domain import (
    ChatRequest,
    CompletionRequest,
    Event,
    Part,
    Request,
    Start,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    Usage,
)
from sluice.errors import GatewayError, Status, quota_exceeded, state_unavailable
from sluice.pipeline.call import Call, Next
from sluice.pricing import PriceTable
from sluice.state.base import SharedState, StateUnavailableError

if TYPE_CHECKING:
    from sluice.routes import Route

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFAULT_LEASE_SECONDS = 15 * 60.0
_WARNING_INTERVAL = 60.0


@dataclasses.dataclass(frozen=True, slots=True)
class _Scope:
    """What one route or one key limits."""

    kind: str  # "route" or "key"
    name: str
    limits: LimitsConfig
    budget: BudgetConfig | None = None

    @property
    def limits_anything(self) -> bool:
        limits = self.limits
        return (
            limits.requests is not None
            or limits.tokens is not None
            or limits.concurrent is not None
            or self.budget is not None
        )

    def subject(self, limit: str) -> str:
        """The limit's name in QuotaFailure, and its key in shared state."""
        return f"{self.kind}:{self.name}/{limit}"

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


class Limits:
    """The limits stage. `state`, `prices` and `routes` (route name -> its
    `limits:`) are attributes, so a config reload can swap them."""

    def __init__(
        self,
        state: SharedState,
        prices: PriceTable,
        routes: Mapping[str, LimitsConfig],
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.prices = prices
        self.routes = routes
        self._lease_seconds = lease_seconds
        # Budget windows are aligned to the epoch by wall-clock time.
        self._wall_clock = wall_clock
        self._warned_at: dict[str, float] = {}

    async def __call__(self, call: Call, next: Next) -> AsyncGenerator[Event, None]:
        assert call.route is not None, "the routing stage runs before limits"
        route = call.route
        scopes = self._scopes(call, route)
        if not scopes:
            async for event in next(call):
                yield event
            return
        for scope in scopes:
            if scope.budget is not None:
                self._require_prices(route, scope)
        leases = await self._admit(call, scopes)
        start: Start | None = None
        usage: Usage | None = None
        try:
            async for event in next(call):
                if isinstance(event, Start):
                    start = event
                elif isinstance(event, Usage):
                    usage = event
                yield event
        finally:
            if leases is not None:
                jobs = self._settlement(route, scopes, leases, start, usage)
                if jobs:
                    # Shielded: a second cancellation must not strand the leases.
                    await asyncio.shield(self._record(jobs))

    def _scopes(self, call: Call, route: Route) -> list[_Scope]:
        scopes = []
        route_limits = self.routes.get(route.name)
        if route_limits is not None:
            scopes.append(_Scope("route", route.name, route_limits))
        caller = call.caller
        if caller is not None:
            scopes.append(
                _Scope("key", caller.name, caller.limits or LimitsConfig(), caller.budget)
            )
        return [scope for scope in scopes if scope.limits_anything]

    def _require_prices(self, route: Route, scope: _Scope) -> None:
        for target in route.targets:
            if self.prices.price(target.provider, target.model) is None:
                model = f"{target.provider}/{target.model}"
                raise GatewayError(
                    Status.FAILED_PRECONDITION,
                    "MODEL_UNPRICED",
                    f"{scope} has a budget, but route {route.name}'s "
                    f"model {model} has no price: add it under `prices:` in the config",
                    metadata={"route": route.name, "model": model},
                )

    # --- admission ---------------------------------------------------------------

    async def _admit(self, call: Call, scopes: Sequence[_Scope]) -> list[tuple[str, str]] | None:
        """The leases the admitted call holds; None when it passes unlimited
        because shared state is unavailable. Raises the refusal."""
        try:
            counts_tokens = any(scope.limits.tokens is not None for scope in scopes)
            estimate = estimate_tokens(call.request) if counts_tokens else 0
            refusals = await _gather(
                [check for scope in scopes for check in self._checks(scope, estimate)]
            )
            refused = [refusal for refusal in refusals if refusal is not None]
            if refused:
                # The one to act on: never retryable first, else the longest wait.
                raise max(
                    refused, key=lambda e: math.inf if e.retry_after is None else e.retry_after
                )
            leases = await self._acquire(scopes)
            try:
                await self._take(scopes)
            except BaseException:
                await self._release(leases)
                raise
            return leases
        except StateUnavailableError as error:
            if any(scope.limits.failure_policy == "fail_closed" for scope in scopes):
                raise state_unavailable("limits") from error
            self._warn(
                "shared state unavailable (%s): limits fail open, calls pass unlimited",
                type(error).__name__,
            )
            return None

    def _checks(self, scope: _Scope, estimate: int) -> list[Awaitable[GatewayError | None]]:
        checks: list[Awaitable[GatewayError | None]] = []
        if scope.limits.requests is not None:
            checks.append(self._check_requests(scope, scope.limits.requests))
        if scope.limits.tokens is not None:
            checks.append(self._check_tokens(scope, scope.limits.tokens, estimate))
        if scope.budget is not None:
            checks.append(self._check_budget(scope, scope.budget))
        return checks

    async def _check_requests(self, scope: _Scope, rate: Rate) -> GatewayError | None:
        subject = scope.subject("requests")
        decision = await self.state.check(subject, rate, 1)
        if decision.allowed:
            return None
        return _rate_limited(scope, rate, decision.retry_after)

    async def _check_tokens(self, scope: _Scope, rate: Rate, estimate: int) -> GatewayError | None:
        subject = scope.subject("tokens")
        message = f"{scope} allows {rate.text} tokens; this call needs about {estimate}"
        if estimate > rate.count:
            # It would never fit: retrying cannot help.
            return quota_exceeded("TOKEN_LIMITED", subject, message)
        decision = await self.state.check(subject, rate, estimate)
        if decision.allowed:
            return None
        return quota_exceeded("TOKEN_LIMITED", subject, message, decision.retry_after)

    async def _check_budget(self, scope: _Scope, budget: BudgetConfig) -> GatewayError | None:
        subject = scope.subject("budget")
        if await self.state.total(subject, budget.period) < budget.usd:
            return None
        return quota_exceeded(
            "BUDGET_EXHAUSTED",
            subject,
            f"{scope} has spent its budget of {budget.usd:g} USD per {_period_text(budget.period)}",
            retry_after=budget.period - self._wall_clock() % budget.period,
        )

    async def _acquire(self, scopes: Sequence[_Scope]) -> list[tuple[str, str]]:
        limited = [
            (scope, scope.limits.concurrent)
            for scope in scopes
            if scope.limits.concurrent is not None
        ]
        results = await _outcomes(
            [
                self.state.acquire(scope.subject("concurrent"), limit, self._lease_seconds)
                for scope, limit in limited
            ]
        )
        leases = [
            (scope.subject("concurrent"), lease)
            for (scope, _), lease in zip(limited, results, strict=True)
            if isinstance(lease, str)
        ]
        if len(leases) < len(limited):
            await self._release(leases)
            for (scope, limit), result in zip(limited, results, strict=True):
                if isinstance(result, BaseException):
                    raise result
                if result is None:
                    raise quota_exceeded(
                        "CONCURRENCY_LIMITED",
                        scope.subject("concurrent"),
                        f"{scope} allows {limit} concurrent streams",
                    )
        return leases

    async def _take(self, scopes: Sequence[_Scope]) -> None:
        limited = [
            (scope, scope.limits.requests) for scope in scopes if scope.limits.requests is not None
        ]
        decisions = await _gather(
            [self.state.take(scope.subject("requests"), rate) for scope, rate in limited]
        )
        for (scope, rate), decision in zip(limited, decisions, strict=True):
            if not decision.allowed:
                raise _rate_limited(scope, rate, decision.retry_after)

    async def _release(self, leases: Sequence[tuple[str, str]]) -> None:
        """Give leases back; one the state cannot take back lapses by itself."""
        self._log_state_failures(
            await _outcomes([self.state.release(key, lease) for key, lease in leases])
        )

    # --- settlement --------------------------------------------------------------

    def _settlement(
        self,
        route: Route,
        scopes: Sequence[_Scope],
        leases: Sequence[tuple[str, str]],
        start: Start | None,
        usage: Usage | None,
    ) -> list[Awaitable[object]]:
        """What ends a call: release its leases, charge what it used."""
        jobs: list[Awaitable[object]] = [self.state.release(key, lease) for key, lease in leases]
        if usage is not None and not (start is not None and start.cache_hit):
            tokens = usage.input_tokens + usage.output_tokens
            for scope in scopes:
                if scope.limits.tokens is not None and tokens:
                    jobs.append(
                        self.state.charge(scope.subject("tokens"), scope.limits.tokens, tokens)
                    )
                if scope.budget is not None:
                    cost = self._cost(route, start, usage)
                    if cost:
                        jobs.append(
                            self.state.add(scope.subject("budget"), cost, scope.budget.period)
                        )
        return jobs

    async def _record(self, jobs: Sequence[Awaitable[object]]) -> None:
        """Run a call's settlement. The call is over: a state failure here
        is logged, never raised."""
        self._log_state_failures(await _outcomes(jobs))

    def _cost(self, route: Route, start: Start | None, usage: Usage) -> float | None:
        """The cost at the price of the route's target that answered (the
        one whose provider the start names), as the operator priced it."""
        targets = route.targets
        target = next((t for t in targets if start and t.provider == start.provider), targets[0])
        return self.prices.cost(target.provider, target.model, usage)

    def _log_state_failures(self, results: Sequence[object]) -> None:
        """Warn of state failures; anything else is a bug and raised."""
        for result in results:
            if isinstance(result, StateUnavailableError):
                self._warn(
                    "shared state unavailable (%s): a call's usage or lease was not recorded",
                    type(result).__name__,
                )
            elif isinstance(result, BaseException):
                raise result

    def _warn(self, message: str, *args: object) -> None:
        """Log `message` at most once a minute: an outage would flood the log."""
        now = time.monotonic()
        if now - self._warned_at.get(message, -math.inf) >= _WARNING_INTERVAL:
            self._warned_at[message] = now
            logger.warning(message, *args)


def estimate_tokens(request: Request) -> int:
    """Input tokens at about four characters each, plus `max_tokens` when set."""
    if isinstance(request, ChatRequest):
        texts = [
            text
            for message in request.messages
            for part in message.parts
            for text in _part_texts(part)
        ]
        texts += [
            text
            for tool in request.tools
            for text in (tool.name, tool.description, json.dumps(tool.parameters))
        ]
    elif isinstance(request, CompletionRequest):
        texts = [request.prompt, request.suffix]
    else:
        return math.ceil(sum(len(text) for text in request.inputs) / 4)
    return math.ceil(sum(len(text) for text in texts) / 4) + (request.generation.max_tokens or 0)


def _part_texts(part: Part) -> tuple[str, ...]:
    if isinstance(part, TextPart):
        return (part.text,)
    if isinstance(part, ToolCallPart):
        return (part.name, part.arguments)
    if isinstance(part, ToolResultPart):
        return (part.content,)
    return ()  # images: no text to count


def _rate_limited(scope: _Scope, rate: Rate, retry_after: float) -> GatewayError:
    return quota_exceeded(
        "RATE_LIMITED",
        scope.subject("requests"),
        f"{scope} allows {rate.text} requests",
        retry_after,
    )


def _period_text(seconds: float) -> str:
    """`day`, `2 hours`, `30 seconds`: a budget period as words."""
    for unit, size in (("day", 86400.0), ("hour", 3600.0), ("minute", 60.0)):
        if seconds % size == 0:
            count = seconds / size
            return unit if count == 1 else f"{count:g} {unit}s"
    return "second" if seconds == 1 else f"{seconds:g} seconds"


async def _outcomes(awaitables: Sequence[Awaitable[_T]]) -> list[_T | BaseException]:
    """Await all at once (one round trip to a remote state, not one each):
    each one's result, or the exception it raised. Only for awaitables that
    never return an exception (refusals are returned, so checks use _gather)."""
    if len(awaitables) > 1:
        return await asyncio.gather(*awaitables, return_exceptions=True)
    outcomes: list[_T | BaseException] = []
    for awaitable in awaitables:
        try:
            outcomes.append(await awaitable)
        except Exception as error:
            outcomes.append(error)
    return outcomes


async def _gather(awaitables: Sequence[Awaitable[_T]]) -> list[_T]:
    """Await all at once; raise the first failure, if any."""
    if len(awaitables) == 1:
        return [await awaitables[0]]
    return list(await asyncio.gather(*awaitables))
