"""Limits stage: requests, tokens and concurrent streams per route and per
API key, and each key's spend budget, counted in shared state.

Scopes: a route's `limits:` count every call to the route (`route:<name>`);
a key's `limits:` and `budget:` count its calls across all its routes
(`key:<name>`). No scope is ever chosen by a metadata value, so a caller
cannot spend another key's limits by what it sends; metadata can only move
a call to another route through the operator's `rules`, whose route limits
then count it, and its own key's still do. A cache hit counts as a request and holds a stream slot,
but is charged no tokens and no cost.

A call is admitted by one atomic `SharedState.admit` of every limit of all
its scopes (one round trip to Redis, before the upstream call starts): it
checks requests (1), tokens (the estimate) and budgets (the window's total <
usd), then the concurrency limits; only when all admit does it take one
request from each requests limit and acquire a lease per concurrency limit,
each lapsing after `lease_seconds` (15 minutes: longer than any stream
should run, so a lease lapses only when a replica died holding it). A
refused call takes nothing from any scope, however many calls race. Of
several refusals, the one reported is a token estimate that can never fit,
else the longest wait; a concurrency limit refuses only a call every rate
and budget admits.

The token estimate is the characters of all text in the request (messages,
tool calls and results, tool definitions; images count nothing) divided by
four, rounded up, plus the request's `max_tokens` when set (the route's
default included). Tokens are charged from the real `Usage` when the stream
ends, also when it failed or was cancelled after a `Usage` arrived; with no
usage reported, nothing is charged. Budgets work the same way: checked
before the call, charged after it with the cost the call was priced at, so
concurrent calls can overspend a budget by what they cost together. A call is settled
by one `SharedState.settle` (one round trip): its leases released, its
tokens and cost charged; a failure there is logged, never raised. A key with a
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
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import TYPE_CHECKING

from sluice.config.periods import Rate
from sluice.config.schema import BudgetConfig, LimitsConfig
from sluice.domain import (
    ChatRequest,
    CompletionRequest,
    Event,
    Part,
    ReasoningPart,
    Request,
    Start,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    Usage,
)
from sluice.errors import GatewayError, Reason, quota_exceeded, state_unavailable
from sluice.pipeline.call import Call, EventStream, Next
from sluice.pricing import PriceTable
from sluice.state.base import (
    Addition,
    BudgetLimit,
    Charge,
    ConcurrencyLimit,
    Lease,
    RateLimit,
    SharedState,
    StateUnavailableError,
)

if TYPE_CHECKING:
    from sluice.routes import Route

logger = logging.getLogger(__name__)

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
    ) -> None:
        self.state = state
        self.prices = prices
        self.routes = routes
        self._lease_seconds = lease_seconds
        self._warned_at: dict[str, float] = {}

    def __call__(self, call: Call, next: Next) -> EventStream:
        assert call.route is not None, "the routing stage runs before limits"
        route = call.route
        scopes = self._scopes(call, route)
        if not scopes:
            return next(call)
        for scope in scopes:
            if scope.budget is not None:
                self._require_prices(route, scope)
        return self._limited(call, next, scopes)

    async def _limited(
        self, call: Call, next: Next, scopes: Sequence[_Scope]
    ) -> AsyncGenerator[Event, None]:
        with call.trace.admitting():
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
                charges, additions = self._usage(call, scopes, start, usage)
                if leases or charges or additions:
                    # Shielded: a second cancellation must not strand the leases.
                    await asyncio.shield(self._settle(call, leases, charges, additions))

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
                    Reason.MODEL_UNPRICED,
                    f"{scope} has a budget, but route {route.name}'s "
                    f"model {model} has no price: add it under `prices:` in the config",
                    metadata={"route": route.name, "model": model},
                )

    # --- admission ---------------------------------------------------------------

    async def _admit(self, call: Call, scopes: Sequence[_Scope]) -> tuple[Lease, ...] | None:
        """The leases the admitted call holds; None when it passes unlimited
        because shared state is unavailable. Raises the refusal."""
        counts_tokens = any(scope.limits.tokens is not None for scope in scopes)
        estimate = estimate_tokens(call.request) if counts_tokens else 0
        rates: list[RateLimit] = []
        budgets: list[BudgetLimit] = []
        concurrency: list[ConcurrencyLimit] = []
        for scope in scopes:
            limits = scope.limits
            if limits.requests is not None:
                rates.append(RateLimit(scope.subject("requests"), limits.requests, 1, take=True))
            if limits.tokens is not None:
                rates.append(RateLimit(scope.subject("tokens"), limits.tokens, estimate))
            if scope.budget is not None:
                budget = scope.budget
                budgets.append(BudgetLimit(scope.subject("budget"), budget.period, budget.usd))
            if limits.concurrent is not None:
                concurrency.append(
                    ConcurrencyLimit(
                        scope.subject("concurrent"), limits.concurrent, self._lease_seconds
                    )
                )
        try:
            admission = await self.state.admit(
                rates, budgets, concurrency, within=call.state_before
            )
        except StateUnavailableError as error:
            if any(scope.limits.failure_policy == "fail_closed" for scope in scopes):
                raise state_unavailable("limits") from error
            self._warn(
                "shared state unavailable (%s): limits fail open, calls pass unlimited",
                type(error).__name__,
            )
            return None
        if admission.refused is not None:
            scope, limit = next(
                (scope, limit)
                for scope in scopes
                for limit in ("requests", "tokens", "budget", "concurrent")
                if scope.subject(limit) == admission.refused
            )
            call.trace.limit_refused(call.route.name if call.route else "", limit, scope.kind)
            raise self._refusal(scope, limit, admission.retry_after, estimate)
        return admission.leases

    @staticmethod
    def _refusal(
        scope: _Scope, limit: str, retry_after: float | None, estimate: int
    ) -> GatewayError:
        """The error of `scope`'s `limit`, which refused the call."""
        subject = scope.subject(limit)
        if limit == "requests":
            assert scope.limits.requests is not None
            return _rate_limited(scope, scope.limits.requests, retry_after or 0.0)
        if limit == "tokens":
            assert scope.limits.tokens is not None
            rate = scope.limits.tokens
            message = f"{scope} allows {rate.text} tokens; this call needs about {estimate}"
            return quota_exceeded(Reason.TOKEN_LIMITED, subject, message, retry_after)
        if limit == "budget":
            assert scope.budget is not None
            return quota_exceeded(
                Reason.BUDGET_EXHAUSTED,
                subject,
                f"{scope} has spent its budget of {scope.budget.usd:g} USD "
                f"per {_period_text(scope.budget.period)}",
                retry_after,
            )
        return quota_exceeded(
            Reason.CONCURRENCY_LIMITED,
            subject,
            f"{scope} allows {scope.limits.concurrent} concurrent streams",
        )

    # --- settlement --------------------------------------------------------------

    def _usage(
        self, call: Call, scopes: Sequence[_Scope], start: Start | None, usage: Usage | None
    ) -> tuple[list[Charge], list[Addition]]:
        """What a call used, to charge: its tokens and its cost per scope."""
        charges: list[Charge] = []
        additions: list[Addition] = []
        if usage is not None and not (start is not None and start.cache_hit):
            tokens = usage.input_tokens + usage.output_tokens
            for scope in scopes:
                if scope.limits.tokens is not None and tokens:
                    charges.append(Charge(scope.subject("tokens"), scope.limits.tokens, tokens))
                if scope.budget is not None and call.cost:
                    additions.append(
                        Addition(scope.subject("budget"), call.cost, scope.budget.period)
                    )
        return charges, additions

    async def _settle(
        self,
        call: Call,
        leases: Sequence[Lease],
        charges: Sequence[Charge],
        additions: Sequence[Addition],
    ) -> None:
        """What ends a call, in one operation: release its leases, charge
        what it used. The call is over: a state failure here is logged,
        never raised (a lease not released lapses by itself)."""
        try:
            with call.trace.settling():
                await self.state.settle(leases, charges, additions, within=call.state_after)
        except StateUnavailableError as error:
            self._warn(
                "shared state unavailable (%s): a call's usage or lease was not recorded",
                type(error).__name__,
            )

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
    if isinstance(part, ReasoningPart):
        return (part.text,)
    return ()  # images: no text to count


def _rate_limited(scope: _Scope, rate: Rate, retry_after: float) -> GatewayError:
    return quota_exceeded(
        Reason.RATE_LIMITED,
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
