"""The gateway: a config turned into a route table and a call pipeline."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sluice.config import GatewayConfig
from sluice.domain import Event
from sluice.pipeline import Call, build_pipeline
from sluice.pipeline.routing import Routing
from sluice.pipeline.upstream import call_upstream
from sluice.providers.http import HttpClientPool
from sluice.routes import RouteTable


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._pool = HttpClientPool()
        self.routes = RouteTable.from_config(config, self._pool)
        self._handle = build_pipeline([Routing(self.routes)], call_upstream)

    def handle(self, call: Call) -> AsyncIterator[Event]:
        return self._handle(call)

    async def aclose(self) -> None:
        await self._pool.aclose()
