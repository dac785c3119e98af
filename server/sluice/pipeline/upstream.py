"""The pipeline's endpoint: stream the answer from the route's target."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator
from contextlib import aclosing

from sluice.domain import Event, Start
from sluice.pipeline.call import Call


async def call_upstream(call: Call) -> AsyncGenerator[Event, None]:
    assert call.route is not None, "the routing stage runs before the upstream"
    target = call.route.targets[0]
    async with aclosing(target.adapter.stream(call.request)) as events:
        async for event in events:
            yield (
                dataclasses.replace(event, provider=target.provider, route=call.route.name)
                if isinstance(event, Start)
                else event
            )
