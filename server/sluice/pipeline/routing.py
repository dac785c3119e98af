"""Routing stage: find the call's route and apply the route's defaults."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator
from contextlib import aclosing

from sluice.domain import EmbeddingRequest, Event
from sluice.errors import GatewayError, Status
from sluice.pipeline.call import Call, Next
from sluice.routes import RouteTable


class Routing:
    def __init__(self, table: RouteTable) -> None:
        self.table = table

    async def __call__(self, call: Call, next: Next) -> AsyncGenerator[Event, None]:
        route = self.table.get(call.request.route)
        if route.operation is not call.request.operation:
            raise GatewayError(
                Status.INVALID_ARGUMENT,
                "WRONG_ROUTE_TYPE",
                f"route {route.name!r} answers {route.operation.value}, "
                f"not {call.request.operation.value}",
                field="route",
                metadata={"route": route.name, "route_type": route.operation.value},
            )
        call.route = route
        if not isinstance(call.request, EmbeddingRequest):
            call.request = dataclasses.replace(
                call.request, generation=call.request.generation.over(route.defaults)
            )
        async with aclosing(next(call)) as events:
            async for event in events:
                yield event
