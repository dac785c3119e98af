"""The route table: each configured route with the targets that answer it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from sluice.config import GatewayConfig
from sluice.config.schema import (
    CircuitBreakerConfig,
    EndUserSource,
    ExperimentConfig,
    PromptConfig,
    RetriesConfig,
    RouteConfig,
    RuleConfig,
    StickyMetadata,
    Strategy,
    StreamConfig,
    TargetConfig,
    TimeoutsConfig,
)
from sluice.domain import GenerationParams, Operation
from sluice.errors import route_not_found
from sluice.providers.base import Adapter
from sluice.providers.bounds import BodyBounds
from sluice.providers.features import Feature
from sluice.providers.http import HttpClientPool


@dataclass(frozen=True, slots=True)
class Target:
    provider: str
    model: str
    adapter: Adapter
    index: int = 0  # position in the route's targets
    weight: int = 1
    timeouts: TimeoutsConfig = field(default_factory=TimeoutsConfig)
    # OpenTelemetry's `gen_ai.provider.name` of `provider` ("": the same), so
    # that telemetry needs nothing from the providers.
    otel_provider: str = ""
    # Seconds to wait for more deltas to join a ready one (coalesce.py);
    # None: no coalescing, one message per upstream delta.
    coalesce_within: float | None = 0.0
    # The provider takes image parts (ProviderSettings.accepts_images).
    accepts_images: bool = True
    # What beyond the common core it can honour (ProviderSettings.features).
    features: frozenset[Feature] = frozenset()
    # The variant this target is (variants.py): its configured name ("": it
    # has none), the system prompt it puts in, and its own generation
    # defaults (the route's apply under them).
    name: str = ""
    prompt: PromptConfig | None = None
    defaults: GenerationParams = field(default_factory=GenerationParams)

    def __post_init__(self) -> None:
        if not self.otel_provider:
            object.__setattr__(self, "otel_provider", self.provider)

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}"

    @property
    def variant(self) -> str:
        """The variant's name: its configured one, else its label."""
        return self.name or self.label


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    operation: Operation
    targets: tuple[Target, ...]
    defaults: GenerationParams
    strategy: Strategy = "fallback"
    sticky: str | StickyMetadata | None = None
    rules: tuple[RuleConfig, ...] = ()
    shadow: Target | None = None
    shadow_sample: float = 0.0
    retries: RetriesConfig = field(default_factory=RetriesConfig)
    circuit_breaker: CircuitBreakerConfig | None = None
    # Cached answers are replayed coalesced (coalesce.py) unless this is off.
    coalesce: bool = True
    allow_provider_options: bool = False
    end_user: EndUserSource = "off"
    # GetExperiment answers for the route (RouteConfig.is_experiment).
    is_experiment: bool = False
    experiment: ExperimentConfig | None = None

    @property
    def named_variants(self) -> bool:
        """Some target has a configured name: the route runs an experiment."""
        return any(target.name for target in self.targets)


def _target(config: TargetConfig, index: int, route: RouteConfig, pool: HttpClientPool) -> Target:
    model = config.model
    # A target's own timeouts, stream settings and bounds win over the route's.
    timeouts = config.timeouts or route.timeouts or TimeoutsConfig()
    stream = config.stream or route.stream or StreamConfig()
    bounds = BodyBounds(
        response=config.max_response_bytes or route.max_response_bytes,
        event=config.max_event_bytes or route.max_event_bytes,
    )
    return Target(
        provider=model.provider,
        model=model.name,
        adapter=model.create_adapter(pool, connect_timeout=timeouts.connect, bounds=bounds),
        index=index,
        weight=config.weight,
        timeouts=timeouts,
        otel_provider=model.otel_provider(model.provider),
        coalesce_within=stream.max_delay_ms / 1000 if stream.coalesce else None,
        accepts_images=model.accepts_images,
        features=model.features,
        name=config.name or "",
        prompt=config.prompt,
        defaults=config.config.params() if config.config else GenerationParams(),
    )


def build_route(config: RouteConfig, pool: HttpClientPool) -> Route:
    shadow = config.shadow
    return Route(
        name=config.name,
        operation=config.operation,
        targets=tuple(
            _target(target, i, config, pool) for i, target in enumerate(config.target_configs)
        ),
        defaults=config.config.params(),
        strategy=config.strategy,
        sticky=config.sticky,
        rules=tuple(config.rules or ()),
        shadow=_target(shadow.target, -1, config, pool) if shadow else None,
        shadow_sample=shadow.sample if shadow else 0.0,
        retries=config.retries or RetriesConfig(),
        circuit_breaker=config.circuit_breaker,
        coalesce=(config.stream or StreamConfig()).coalesce,
        allow_provider_options=config.allow_provider_options,
        end_user=config.end_user,
        is_experiment=config.is_experiment,
        experiment=config.experiment,
    )


class RouteTable:
    def __init__(self, routes: list[Route]) -> None:
        self._routes = {route.name: route for route in routes}

    @classmethod
    def from_config(cls, config: GatewayConfig, pool: HttpClientPool) -> RouteTable:
        return cls([build_route(route, pool) for route in config.routes])

    def get(self, name: str) -> Route:
        route = self._routes.get(name)
        if route is None:
            raise route_not_found(name)
        return route

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes.values())

    def __contains__(self, name: object) -> bool:
        return name in self._routes

    def __len__(self) -> int:
        return len(self._routes)
