"""A call in flight, and the composer that runs stages around it.

A stage is `(call, next) -> EventStream`. One that decides once and then
lets everything pass (authorization, routing, shadowing, a route without
limits or cache) returns `next(call)` itself, so its events cross no frame
of its own; one that acts on events is an async generator over `next(call)`.

Closing is the composer's, not the stages': every stream a stage opens
through `next` is owned by the stage's stream, and closing that closes them
first, innermost first. So when a caller leaves mid-stream the upstream
request is closed before any stage's own cleanup runs (settling limits,
storing an answer), and no stage has to remember `aclosing`. A stage whose
work outlives it (a single flight shared by several calls) `fork`s a `Next`
of its own and closes it when that work ends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sluice.domain import AttemptRecord, Event, Request
from sluice.identity import Caller
from sluice.state.base import StateWait
from sluice.streams import Stream
from sluice.telemetry.call import CallTrace

if TYPE_CHECKING:
    from sluice.routes import Route, Target


# A call's events, as a stage returns them.
EventStream = Stream[Event]


@dataclass(slots=True)
class Call:
    """One gateway call. Stages fill in what they decide (the caller, the
    route, ...)."""

    request: Request
    # gRPC invocation metadata, keys lower-case.
    headers: Mapping[str, str]
    route: Route | None = None
    caller: Caller | None = None
    # The targets the call tries, first choice first, and the request as
    # routing left it, before the first choice shaped `request` (variants.py).
    targets: list[Target] = field(default_factory=list)
    routed: Request | None = None
    # Whose cached answers the call may read, as namespace.py settles it on
    # a cached route (None until then).
    cache_namespace: Mapping[str, str | None] | None = None
    # Every upstream attempt so far, and the target whose answer the caller got.
    attempts: list[AttemptRecord] = field(default_factory=list)
    answered_by: Target | None = None
    # USD the upstream bills for this call, priced once when its usage
    # arrives: 0 when no upstream answered (a cache hit, a refusal), None
    # when unknown (no usage reported, or the model has no price).
    cost: float | None = 0.0
    trace: CallTrace = field(default_factory=CallTrace.untraced)
    # One `state.timeout` for the state operations before the answer (cache
    # lookup, admission), one for those after it (storing, settling).
    state_before: StateWait = field(default_factory=StateWait)
    state_after: StateWait = field(default_factory=StateWait)


Handler = Callable[[Call], EventStream]


class Next:
    """The rest of the pipeline, as one stage sees it: calling it opens the
    next handler's stream, which this `Next` owns until `aclose`."""

    __slots__ = ("_handler", "opened")

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.opened: list[EventStream] = []

    def __call__(self, call: Call) -> EventStream:
        stream = self._handler(call)
        self.opened.append(stream)
        return stream

    def fork(self) -> Next:
        """A `Next` to the same handler whose streams the caller owns and
        closes: for work that outlives the stage's own stream."""
        return Next(self._handler)

    async def aclose(self) -> None:
        """Close every stream opened through this, the latest first."""
        opened, self.opened = self.opened, []
        for stream in reversed(opened):
            await stream.aclose()


Stage = Callable[[Call, Next], EventStream]


class Owning:
    """A stage's stream that owns what the stage opened through `next`:
    closing it closes those first. Iterating costs one call per event."""

    __slots__ = ("_next", "_stream")

    def __init__(self, stream: EventStream, next: Next) -> None:
        self._stream = stream
        self._next = next

    def __aiter__(self) -> Owning:
        return self

    def __anext__(self) -> Awaitable[Event]:
        return self._stream.__anext__()

    async def aclose(self) -> None:
        try:
            await self._next.aclose()
        finally:
            await self._stream.aclose()


def build_pipeline(stages: Sequence[Stage], endpoint: Handler) -> Handler:
    """Compose stages so that the first one listed runs outermost."""
    handler = endpoint
    for stage in reversed(stages):
        handler = _wrap(stage, handler)
    return handler


def _wrap(stage: Stage, inner: Handler) -> Handler:
    def handler(call: Call) -> EventStream:
        next = Next(inner)
        stream = stage(call, next)
        if len(next.opened) == 1 and stream is next.opened[0]:
            return stream  # passed through: whoever closes it closes the rest
        return Owning(stream, next)

    return handler
