"""The gateway: a config turned into a route table, shared state and a call
pipeline: authorize -> route -> limit -> cache -> upstream."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from sluice.auth import KeyRing
from sluice.config import GatewayConfig
from sluice.domain import Event
from sluice.pipeline import Call, build_pipeline
from sluice.pipeline.auth import authorize
from sluice.pipeline.cache import ResponseCaching
from sluice.pipeline.limits import Limits
from sluice.pipeline.routing import Routing
from sluice.pipeline.upstream import call_upstream
from sluice.pricing import PriceTable
from sluice.providers.http import HttpClientPool
from sluice.routes import RouteTable
from sluice.state.factory import create_state


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._pool = HttpClientPool()
        self.routes = RouteTable.from_config(config, self._pool)
        self.keys = KeyRing(config.auth)
        self.state = create_state(config.state)
        limits = {route.name: route.limits for route in config.routes if route.limits}
        caches = {route.name: route.cache for route in config.routes if route.cache}
        self._handle = build_pipeline(
            [
                authorize,
                Routing(self.routes),
                Limits(self.state, PriceTable(config.prices), limits),
                ResponseCaching(caches, self.state),
            ],
            call_upstream,
        )

    def handle(self, call: Call) -> AsyncGenerator[Event, None]:
        return self._handle(call)

    async def aclose(self) -> None:
        await self.state.aclose()
        await self._pool.aclose()
