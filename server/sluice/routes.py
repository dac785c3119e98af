"""The route table: each configured route with the adapters that answer it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sluice.config import GatewayConfig
from sluice.domain import GenerationParams, Operation
from sluice.errors import route_not_found
from sluice.providers.base import Adapter
from sluice.providers.http import HttpClientPool


@dataclass(frozen=True, slots=True)
class Target:
    provider: str
    model: str
    adapter: Adapter


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    operation: Operation
    targets: tuple[Target, ...]
    defaults: GenerationParams


class RouteTable:
    def __init__(self, routes: list[Route]) -> None:
        self._routes = {route.name: route for route in routes}

    @classmethod
    def from_config(cls, config: GatewayConfig, pool: HttpClientPool) -> RouteTable:
        return cls(
            [
                Route(
                    name=route.name,
                    operation=route.operation,
                    targets=(
                        Target(
                            route.model.provider,
                            route.model.name,
                            route.model.create_adapter(pool),
                        ),
                    ),
                    defaults=route.config.params(),
                )
                for route in config.routes
            ]
        )

    def get(self, name: str) -> Route:
        route = self._routes.get(name)
        if route is None:
            raise route_not_found(name)
        return route

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes.values())

    def __len__(self) -> int:
        return len(self._routes)
