"""Per-attempt timeouts around an upstream's event stream.

`first_token` bounds the time from the start of the attempt to its first
answer (any event but the `Start`), `idle` the upstream's silence between two
events, and `total` the whole attempt. A timeout fires only while the
upstream is awaited, never while the caller is busy with an event, so a slow
caller is never mistaken for a stalled upstream. (`connect` bounds the TCP
connect, which only the HTTP client can see.) The caller's own deadline needs
nothing here: its cancellation reaches the upstream read directly.

A timeout is UNAVAILABLE with reason UPSTREAM_TIMEOUT: retryable, like any
upstream that did not answer. DEADLINE_EXCEEDED stays the caller's deadline
(and an upstream's own 408/504).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator
from contextlib import aclosing

from sluice.config.schema import TimeoutsConfig
from sluice.domain import Event, Start
from sluice.errors import GatewayError, upstream_timeout


def bounded(
    events: AsyncGenerator[Event, None], timeouts: TimeoutsConfig, provider: str
) -> AsyncGenerator[Event, None]:
    """`events`, failing with UPSTREAM_TIMEOUT when a bound is exceeded."""
    if timeouts.first_token is None and timeouts.idle is None and timeouts.total is None:
        return events
    return _bounded(events, timeouts, provider)


async def _bounded(
    events: AsyncGenerator[Event, None], timeouts: TimeoutsConfig, provider: str
) -> AsyncGenerator[Event, None]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    first_token_at = started + (timeouts.first_token or math.inf)
    total_at = started + (timeouts.total or math.inf)
    idle = timeouts.idle or math.inf
    async with aclosing(events):
        while True:
            deadline = min(first_token_at, total_at, loop.time() + idle)
            try:
                if deadline == math.inf:
                    event = await anext(events)
                else:
                    # Only the wait for the upstream is bounded: a timeout
                    # held across `yield` would cancel the caller's work.
                    async with asyncio.timeout_at(deadline):
                        event = await anext(events)
            except StopAsyncIteration:
                return
            except TimeoutError:
                if deadline == first_token_at:
                    raise _timeout(provider, "first_token", first_token_at - started) from None
                if deadline == total_at:
                    raise _timeout(provider, "total", total_at - started) from None
                raise _timeout(provider, "idle", idle) from None
            if not isinstance(event, Start):
                first_token_at = math.inf
            yield event


_WHAT = {
    "first_token": "no first token within",
    "idle": "no data for",
    "total": "the attempt took longer than",
}


def _timeout(provider: str, kind: str, seconds: float) -> GatewayError:
    return upstream_timeout(provider, kind, f"{_WHAT[kind]} {seconds:g} s")
