"""The composer: stages that pass a call through cost no frame, and closing
a call's stream closes what every stage opened, innermost first."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from sluice.domain import (
    ChatRequest,
    Event,
    Finish,
    FinishReason,
    Message,
    Role,
    TextDelta,
    TextPart,
)
from sluice.pipeline.call import Call, EventStream, Next, Stage, build_pipeline

REQUEST = ChatRequest(route="chat", messages=(Message(Role.USER, (TextPart("hi"),)),))
EVENTS: list[Event] = [TextDelta("a"), TextDelta("b"), TextDelta("c"), Finish(FinishReason.STOP)]


class Log:
    """What happened, in order."""

    def __init__(self) -> None:
        self.entries: list[str] = []

    def endpoint(self, call: Call) -> EventStream:
        async def answer() -> AsyncGenerator[Event, None]:
            try:
                for event in EVENTS:
                    yield event
            finally:
                self.entries.append("upstream closed")

        return answer()

    def acting(self, name: str) -> Stage:
        """A stage that watches every event and cleans up when it ends, as
        the limits stage settles and the cache stores."""

        def stage(call: Call, next: Next) -> EventStream:
            async def watch() -> AsyncGenerator[Event, None]:
                try:
                    async for event in next(call):
                        yield event
                finally:
                    self.entries.append(f"{name} cleaned up")

            return watch()

        return stage


def passing(call: Call, next: Next) -> EventStream:
    return next(call)


def call() -> Call:
    return Call(REQUEST, {})


async def test_closing_mid_stream_closes_the_upstream_before_any_stage_cleans_up() -> None:
    log = Log()
    handler = build_pipeline([log.acting("outer"), passing, log.acting("inner")], log.endpoint)
    stream = handler(call())
    assert await anext(stream) == TextDelta("a")
    await stream.aclose()
    assert log.entries == ["upstream closed", "inner cleaned up", "outer cleaned up"]


async def test_a_stream_read_to_its_end_is_closed_in_the_same_order() -> None:
    log = Log()
    handler = build_pipeline([log.acting("outer"), log.acting("inner")], log.endpoint)
    stream = handler(call())
    assert [event async for event in stream] == EVENTS
    await stream.aclose()  # nothing left to close: no second cleanup
    assert log.entries == ["upstream closed", "inner cleaned up", "outer cleaned up"]


def test_a_stage_that_passes_the_call_on_returns_the_next_stream_itself() -> None:
    log = Log()
    inner = log.endpoint(call())
    handler = build_pipeline([passing, passing], lambda _call: inner)
    assert handler(call()) is inner


async def test_a_forked_next_is_not_closed_with_the_stage() -> None:
    log = Log()
    forked: list[EventStream] = []

    def detaching(on: Call, next: Next) -> EventStream:
        fork = next.fork()
        forked.append(fork(on))  # owned by `fork`, e.g. a single flight's task

        async def nothing() -> AsyncGenerator[Event, None]:
            yield Finish(FinishReason.STOP)

        return nothing()

    stream = build_pipeline([detaching], log.endpoint)(call())
    assert [event async for event in stream] == [Finish(FinishReason.STOP)]
    await stream.aclose()
    assert log.entries == []
    assert await anext(forked[0]) == TextDelta("a")  # still open, for its owner
    await forked[0].aclose()
    assert log.entries == ["upstream closed"]
