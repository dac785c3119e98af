"""A call in flight and the types that compose stages around it."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sluice.domain import AttemptRecord, Event, Request, Usage
from sluice.telemetry.call import CallTrace

if TYPE_CHECKING:
    from sluice.config.schema import BudgetConfig, LimitsConfig
    from sluice.pricing import PriceTable
    from sluice.routes import Route, Target


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls: an API key, by its configured name (never the key)."""

    name: str
    routes: frozenset[str] | None  # None: every route
    limits: LimitsConfig | None = None
    budget: BudgetConfig | None = None


@dataclass(slots=True)
class Call:
    """One gateway call. Stages fill in what they decide (the caller, the
    route, ...)."""

    request: Request
    # gRPC invocation metadata, keys lower-case.
    headers: Mapping[str, str]
    route: Route | None = None
    caller: Caller | None = None
    # Every upstream attempt so far, and the target whose answer the caller got.
    attempts: list[AttemptRecord] = field(default_factory=list)
    answered_by: Target | None = None
    trace: CallTrace = field(default_factory=CallTrace.untraced)

    def cost(self, prices: PriceTable, usage: Usage | None) -> float | None:
        """USD the upstream bills for `usage`, at the price of the target that
        answered: 0 when none did (a cache hit, a refusal), None when unknown
        (no usage reported, or that model has no price)."""
        target = self.answered_by
        if target is None:
            return 0.0
        return None if usage is None else prices.cost(target.provider, target.model, usage)


Next = Callable[[Call], AsyncGenerator[Event, None]]
Stage = Callable[[Call, Next], AsyncGenerator[Event, None]]


def build_pipeline(stages: Sequence[Stage], endpoint: Next) -> Next:
    """Compose stages so that the first one listed runs outermost."""
    handler = endpoint
    for stage in reversed(stages):
        handler = _wrap(stage, handler)
    return handler


def _wrap(stage: Stage, next_handler: Next) -> Next:
    def handler(call: Call) -> AsyncGenerator[Event, None]:
        return stage(call, next_handler)

    return handler
