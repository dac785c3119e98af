"""Shadow traffic: mirror a sampled share of a route's calls to its shadow
target, record how the mirror did, and discard its answer.

`Shadowing` is a stage placed right before the attempts endpoint (after
limits and the cache), so it mirrors only calls that go upstream: a refused
call or a cache hit is not mirrored. A call is sampled with probability
`shadow.sample`; a sampled call starts a background task that sends the
caller's request, as the shadow target shapes it (variants.py), to the shadow
target and reads its stream to the end. The caller's stream is never touched: the stage returns
`next(call)` itself, so it costs no work per chunk, and the mirror neither
waits for the caller nor is waited for; it also outlives a caller that
leaves early.

Bounds: at most `max_in_flight` mirrors run at once per gateway (a sampled
call finding every slot taken is not mirrored, and counted in `dropped`),
and each mirror at most its target's `timeouts.total`, else
`DEFAULT_TIMEOUT`. Every mirror ends in a `ShadowRecord`: passed to
`on_result` (the telemetry hook) and logged (failures and timeouts at info,
the rest at debug). A mirror never raises; `aclose`
cancels those still running (gateway shutdown).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass

from sluice.domain import Request
from sluice.errors import GatewayError, Reason, upstream_timeout
from sluice.pipeline.call import Call, EventStream, Next
from sluice.pipeline.variants import request_for
from sluice.routes import Target
from sluice.telemetry.call import CallTrace

logger = logging.getLogger(__name__)

DEFAULT_MAX_IN_FLIGHT = 32
DEFAULT_TIMEOUT = 300.0


class ShadowOutcome(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    TIMEOUT = "timeout"
    DROPPED = "dropped"  # not sent: every slot was taken


@dataclass(frozen=True, slots=True)
class ShadowRecord:
    """How one mirrored call went."""

    route: str
    target: str  # "provider/model"
    outcome: ShadowOutcome
    duration: float  # seconds
    error: str = ""  # "STATUS: message" when it failed


class Shadowing:
    """The shadow stage, shared by all calls of a gateway."""

    def __init__(
        self,
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        timeout: float = DEFAULT_TIMEOUT,
        on_result: Callable[[ShadowRecord], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.on_result = on_result
        self.dropped = 0
        self._max_in_flight = max_in_flight
        self._timeout = timeout
        self._rng = rng or random.Random()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def __call__(self, call: Call, next: Next) -> EventStream:
        route = call.route
        assert route is not None, "the routing stage runs before shadowing"
        if route.shadow is not None and self._rng.random() < route.shadow_sample:
            self._mirror(route.name, route.shadow, call)
        return next(call)

    async def aclose(self) -> None:
        """Cancel the mirrors still running and wait for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _mirror(self, route: str, target: Target, call: Call) -> None:
        if len(self._tasks) >= self._max_in_flight:
            self.dropped += 1
            record = ShadowRecord(route, target.label, ShadowOutcome.DROPPED, 0.0)
            self._report(record, call.trace)
            return
        task = asyncio.create_task(self._run(route, target, request_for(call, target), call.trace))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, route: str, target: Target, request: Request, trace: CallTrace) -> None:
        started = time.monotonic()
        outcome, error = ShadowOutcome.SUCCESS, ""
        limit = target.timeouts.total or self._timeout
        # Traced beside the call's own attempts, marked sluice.shadow.
        upstream = trace.attempt(route, target, request, number=1, shadow=True)
        failure: GatewayError | None = None
        completed = False
        try:
            stream = target.adapter.stream(request, observer=upstream)
            async with asyncio.timeout(limit), aclosing(stream) as events:
                async for event in events:
                    upstream.received(event)
            completed = True
        except TimeoutError:
            outcome, error = ShadowOutcome.TIMEOUT, f"no complete answer within {limit:g}s"
            failure = upstream_timeout(target.provider, "total", error)
        except GatewayError as failed:
            outcome, error = ShadowOutcome.FAILURE, f"{failed.status.name}: {failed.message}"
            failure = failed
        except Exception as crash:
            # An adapter bug; the caller must not see it, the operator should.
            logger.exception("shadow call to %s of route %r crashed", target.label, route)
            outcome, error = ShadowOutcome.FAILURE, f"INTERNAL: {type(crash).__name__}"
            failure = GatewayError(Reason.INTERNAL, error)
        finally:
            upstream.end(failure, cancelled=failure is None and not completed)
        record = ShadowRecord(route, target.label, outcome, time.monotonic() - started, error)
        self._report(record, trace)

    def _report(self, record: ShadowRecord, trace: CallTrace) -> None:
        trace.shadow_result(record.route, record.target, record.outcome.value)
        # Successes and drops are the bulk (drops are counted): info would flood.
        quiet = record.outcome in (ShadowOutcome.SUCCESS, ShadowOutcome.DROPPED)
        logger.log(
            logging.DEBUG if quiet else logging.INFO,
            "shadow call to %s of route %r: %s in %.3fs%s",
            record.target,
            record.route,
            record.outcome.value,
            record.duration,
            f" ({record.error})" if record.error else "",
        )
        if self.on_result is not None:
            try:
                self.on_result(record)
            except Exception:
                logger.exception("shadow on_result hook failed")
