"""The gateway: a config turned into a route table, shared state and a call
pipeline: authorize -> route -> variants -> cache namespace -> limit -> cache
-> shadow -> attempts.

A config reload builds a new Gateway with `reuse=` the running one. Parts
that outlive one config (the HTTP client pool, the shared state while the
`state:` section is unchanged) are taken over from it, so connections,
counters and cached answers survive the reload; everything else is rebuilt
from the new config. A long-lived part joins this in two lines: take it over
in `__init__` (`self.x = reuse.x if reuse is not None else X()`), and, if it
must be closed, list it in `long_lived`. The old gateway keeps serving its
in-flight calls and is then closed with `keep=` what a live gateway still
holds, so a part is closed once, by the last gateway holding it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Protocol

from sluice.auth import Authenticator
from sluice.config import GatewayConfig
from sluice.config.schema import CacheConfig
from sluice.experiments.service import Experiments
from sluice.pipeline import Call, EventStream, build_pipeline
from sluice.pipeline.attempts import Attempts
from sluice.pipeline.auth import authorize
from sluice.pipeline.cache import ResponseCaching
from sluice.pipeline.call import Handler, Stage
from sluice.pipeline.limits import Limits
from sluice.pipeline.namespace import CacheNamespaces
from sluice.pipeline.routing import Routing
from sluice.pipeline.selection import TargetStats
from sluice.pipeline.semantic_cache import SemanticCache
from sluice.pipeline.shadow import Shadowing
from sluice.pipeline.variants import Variants
from sluice.pricing import PriceTable
from sluice.providers.http import HttpClientPool
from sluice.resilience.circuit_breaker import Breakers, CircuitState
from sluice.routes import RouteTable
from sluice.semantic_index import SemanticIndexes
from sluice.semantic_sharing import SemanticSharing
from sluice.state.base import SharedState
from sluice.state.factory import create_state
from sluice.telemetry import Telemetry
from sluice.telemetry.semconv import ROUTE, TARGET, TARGET_INDEX

logger = logging.getLogger(__name__)

CIRCUIT_GAUGE_VALUES: Mapping[CircuitState, int] = {
    CircuitState.CLOSED: 0,
    CircuitState.HALF_OPEN: 1,
    CircuitState.OPEN: 2,
}


class Closeable(Protocol):
    async def aclose(self) -> None: ...


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        reuse: Gateway | None = None,
        *,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.config = config
        # One per process (see telemetry.core): a reload keeps it.
        self.telemetry: Telemetry = (
            reuse.telemetry if reuse is not None else telemetry or Telemetry.off()
        )
        if reuse is not None and reuse.config.telemetry != config.telemetry:
            logger.warning("the telemetry section changed: it applies at the next restart")
        self._pool: HttpClientPool = reuse._pool if reuse is not None else HttpClientPool()
        self.state: SharedState = (
            reuse.state
            if reuse is not None and reuse.config.state == config.state
            else create_state(config.state)
        )
        # Targets keep their circuit state across reloads.
        self.breakers: Breakers = reuse.breakers if reuse is not None else Breakers()
        # Mirrors in flight outlive a reload; the last gateway cancels them.
        self.shadowing: Shadowing = reuse.shadowing if reuse is not None else Shadowing()
        # Semantic indexes are per replica, in memory: a reload keeps them,
        # and their sharing while the state is the same.
        self.semantic_indexes: SemanticIndexes = (
            reuse.semantic_indexes if reuse is not None else SemanticIndexes()
        )
        self.semantic_sharing: SemanticSharing = (
            reuse.semantic_sharing
            if reuse is not None and reuse.state is self.state
            else SemanticSharing(self.state.semantic)
        )
        self.routes = RouteTable.from_config(config, self._pool)
        self.callers = Authenticator(config.auth)
        self.prices = PriceTable(config.prices)
        self.experiments = Experiments(config.experiments, self.state.experiments, self.routes)
        self.telemetry.instruments.observe_circuits(self._circuit_states)
        self.telemetry.instruments.observe_traffic(self.experiments.traffic.current)
        self._handle = self._pipeline(config)

    def _pipeline(self, config: GatewayConfig) -> Handler:
        """authorize (when auth is on) -> route -> variants (the targets chosen,
        the request shaped for the first), then the route's own stages:
        cache namespace -> limit -> cache -> shadow -> attempts, each only where
        the route (or a key) configures it, so a stage a route does not use
        costs it nothing."""
        limits = Limits(
            self.state,
            self.prices,
            {route.name: route.limits for route in config.routes if route.limits},
        )
        caches = {route.name: route.cache for route in config.routes if route.cache}
        # Before limits: a namespace the key may not claim is refused having
        # taken nothing.
        namespaces = CacheNamespaces({name: cache.namespace for name, cache in caches.items()})
        caching = ResponseCaching(caches, self.state, self._semantic_caches(caches))
        stats = TargetStats(self.prices, traffic=self.experiments.traffic)
        attempts = Attempts(self.breakers, stats, prices=self.prices)
        keys_limit = self.callers.limit_anything
        routes: dict[str, Handler] = {
            route.name: build_pipeline(
                [
                    stage
                    for stage, used in (
                        (namespaces, route.cache is not None),
                        (limits, route.limits is not None or keys_limit),
                        (caching, route.cache is not None),
                        # After the cache: only calls that go upstream are mirrored.
                        (self.shadowing, route.shadow is not None),
                    )
                    if used
                ],
                attempts,
            )
            for route in config.routes
        }

        def to_route(call: Call) -> EventStream:
            assert call.route is not None, "the routing stage runs first"
            return routes[call.route.name](call)

        routing: list[Stage] = [Routing(self.routes), Variants(stats)]
        return build_pipeline([authorize, *routing] if self.callers.enabled else routing, to_route)

    def _semantic_caches(self, caches: Mapping[str, CacheConfig]) -> dict[str, SemanticCache]:
        """Each route's semantic cache; its embeddings calls go through this
        gateway's whole pipeline, as their caller's."""
        semantic = {
            name: SemanticCache(
                name,
                cache.semantic,
                self.semantic_indexes.of(name, cache.semantic.max_entries or cache.max_entries),
                self.semantic_sharing,
                self.handle,
            )
            for name, cache in caches.items()
            if cache.semantic is not None
        }
        if semantic:
            self.semantic_sharing.follow({name: cache.index for name, cache in semantic.items()})
        return semantic

    def handle(self, call: Call) -> EventStream:
        """The call's events; closing the stream closes every stage's part
        of it, the upstream first."""
        return self._handle(call)

    def _circuit_states(self) -> list[tuple[int, dict[str, str | int]]]:
        """The circuit state of each target of a route with a circuit breaker,
        for the `sluice.circuit.state` gauge."""
        return [
            (
                CIRCUIT_GAUGE_VALUES[self.breakers.state(route, target)],
                {ROUTE: route.name, TARGET: target.label, TARGET_INDEX: target.index},
            )
            for route in self.routes
            if route.circuit_breaker is not None
            for target in route.targets
        ]

    def long_lived(self) -> tuple[Closeable, ...]:
        """The parts a successor may take over, each closed by the last
        gateway that holds it."""
        # Shadowing first: its mirrors are cancelled before the pool closes.
        # Sharing before the state it follows.
        return (self.shadowing, self.semantic_sharing, self.state, self._pool)

    async def aclose(self, keep: Collection[object] = ()) -> None:
        """Close this gateway's parts, except those in `keep` (by identity):
        the ones a gateway still serving holds."""
        for part in self.long_lived():
            if not any(part is kept for kept in keep):
                await part.aclose()
