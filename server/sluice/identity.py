"""Who calls: the identity a call is made under, as the gateway knows it.

An API key (auth.py) names one, and so does a client certificate or a
forwarded mesh identity (peer_identity.py): each produces the same `Caller`,
so limits, budgets, the access log and telemetry treat every identity alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from sluice.config.schema import BudgetConfig, CallerConfig, LimitsConfig


@dataclass(frozen=True, slots=True)
class Caller:
    """A caller by its configured name (never its secret)."""

    name: str
    routes: frozenset[str] | None  # None: every route
    limits: LimitsConfig | None = None
    budget: BudgetConfig | None = None
    # Cache namespace values the caller may claim in metadata (namespace.py).
    namespaces: frozenset[str] = frozenset()


def caller_of(config: CallerConfig) -> Caller:
    """The caller a key or identity of `auth:` configures."""
    return Caller(
        name=config.name,
        routes=None if config.routes is None else frozenset(config.routes),
        namespaces=frozenset(config.namespaces or ()),
        limits=config.limits,
        budget=config.budget,
    )


def allows(caller: Caller | None, route: str) -> bool:
    """Whether `caller` may use `route`; an anonymous caller (auth off) may
    use every route."""
    return caller is None or caller.routes is None or route in caller.routes
