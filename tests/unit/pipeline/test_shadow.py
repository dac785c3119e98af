"""The shadow stage: a sampled share of calls mirrored in the background,
never changing or slowing the caller's stream, bounded in number and time,
every outcome recorded and no error raised."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator

import pytest

from sluice.config.schema import RouteConfig, TimeoutsConfig
from sluice.domain import (
    ChatRequest,
    Event,
    Finish,
    FinishReason,
    GenerationParams,
    Message,
    Operation,
    Request,
    Role,
    Start,
    TextDelta,
    TextPart,
)
from sluice.errors import GatewayError, Reason
from sluice.pipeline.call import Call, Next
from sluice.pipeline.shadow import Shadowing, ShadowOutcome, ShadowRecord
from sluice.providers.base import Adapter, ExchangeObserver
from sluice.providers.http import HttpClientPool
from sluice.routes import Route, Target, build_route
from tests.timing import TIMER_RESOLUTION
from tests.upstream import unconnectable

ANSWER: tuple[Event, ...] = (Start("id", "main"), TextDelta("hi"), Finish(FinishReason.STOP))
REQUEST = ChatRequest("r", (Message(Role.USER, (TextPart("hello"),)),), GenerationParams(seed=1))


class Mirror(Adapter):
    """A shadow upstream: answers after `delay` seconds, or fails with `error`."""

    provider = "shadow"

    def __init__(self, delay: float = 0.0, error: Exception | None = None) -> None:
        self.delay = delay
        self.error = error
        self.requests: list[Request] = []

    async def stream(
        self,
        request: Request,
        *,
        observer: ExchangeObserver | None = None,
        coalesce_within: float | None = None,
    ) -> AsyncGenerator[Event, None]:
        self.requests.append(request)
        yield Start("shadow-id", "shadow-model")
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        yield TextDelta("ignored")
        yield Finish(FinishReason.STOP)


class Main(Adapter):
    provider = "main"

    async def stream(
        self,
        request: Request,
        *,
        observer: ExchangeObserver | None = None,
        coalesce_within: float | None = None,
    ) -> AsyncGenerator[Event, None]:
        for event in ANSWER:
            yield event


def route(mirror: Mirror | None, sample: float = 1.0, total: float | None = None) -> Route:
    shadow = (
        Target("shadow", "model", mirror, index=-1, timeouts=TimeoutsConfig(total=total))
        if mirror is not None
        else None
    )
    return Route(
        "r",
        Operation.CHAT,
        (Target("main", "model", Main()),),
        GenerationParams(),
        shadow=shadow,
        shadow_sample=sample,
    )


def upstream(call: Call) -> AsyncGenerator[Event, None]:
    return Main().stream(call.request)


class Recorder:
    def __init__(self) -> None:
        self.records: list[ShadowRecord] = []

    def __call__(self, record: ShadowRecord) -> None:
        self.records.append(record)


async def through(stage: Shadowing, on: Route) -> list[Event]:
    call = Call(REQUEST, {}, route=on, routed=REQUEST)
    return [event async for event in stage(call, Next(upstream))]


async def settled(stage: Shadowing) -> None:
    """Wait until no mirror runs any more."""
    async with asyncio.timeout(5.0):
        while stage.in_flight:  # noqa: ASYNC110 (the stage has no event to wait on)
            await asyncio.sleep(0.005)


@pytest.mark.parametrize(
    ("sample", "low", "high"), [(0.0, 0, 0), (0.25, 2300, 2700), (1.0, 10_000, 10_000)]
)
async def test_a_sampled_share_of_calls_is_mirrored(sample: float, low: int, high: int) -> None:
    recorder = Recorder()
    stage = Shadowing(max_in_flight=10_000, on_result=recorder, rng=random.Random(3))
    mirrored = route(Mirror(), sample)
    for _ in range(10_000):
        assert await through(stage, mirrored) == list(ANSWER)
    await settled(stage)
    assert low <= len(recorder.records) <= high
    assert {record.outcome for record in recorder.records} <= {ShadowOutcome.SUCCESS}


async def test_the_mirror_gets_the_same_request() -> None:
    mirror = Mirror()
    stage = Shadowing()
    await through(stage, route(mirror))
    await settled(stage)
    assert mirror.requests == [REQUEST]


def test_a_route_without_shadow_gets_the_next_stage_stream_itself() -> None:
    """No wrapper around the caller's stream: nothing to do per chunk."""
    stream = upstream(Call(REQUEST, {}))
    next = Next(lambda _call: stream)
    assert Shadowing()(Call(REQUEST, {}, route=route(None)), next) is stream


async def test_a_slow_mirror_neither_delays_nor_changes_the_callers_stream() -> None:
    recorder = Recorder()
    stage = Shadowing(on_result=recorder)
    started = time.monotonic()
    assert await through(stage, route(Mirror(delay=0.5))) == list(ANSWER)
    assert time.monotonic() - started < 0.1
    assert (stage.in_flight, recorder.records) == (1, [])

    await settled(stage)
    (record,) = recorder.records
    assert (record.route, record.target, record.outcome, record.error) == (
        "r",
        "shadow/model",
        ShadowOutcome.SUCCESS,
        "",
    )
    assert 0.5 - TIMER_RESOLUTION <= record.duration < 0.7


async def test_mirrors_in_flight_are_bounded_and_excess_dropped() -> None:
    recorder = Recorder()
    stage = Shadowing(max_in_flight=2, on_result=recorder)
    slow = route(Mirror(delay=30.0))
    for _ in range(5):
        assert await through(stage, slow) == list(ANSWER)
    await asyncio.sleep(0.01)  # the two mirrors start
    assert (stage.in_flight, stage.dropped) == (2, 3)
    assert [record.outcome for record in recorder.records] == [ShadowOutcome.DROPPED] * 3

    started = time.monotonic()
    await stage.aclose()  # shutdown cancels them at once
    assert time.monotonic() - started < 0.1
    assert stage.in_flight == 0
    assert len(recorder.records) == 3  # a cancelled mirror has no outcome


@pytest.mark.parametrize(
    ("mirror", "total", "outcome", "error"),
    [
        (
            Mirror(error=GatewayError(Reason.UPSTREAM_UNAVAILABLE, "shadow: down")),
            None,
            ShadowOutcome.FAILURE,
            "UNAVAILABLE: shadow: down",
        ),
        (Mirror(error=RuntimeError("bug")), None, ShadowOutcome.FAILURE, "INTERNAL: RuntimeError"),
        (Mirror(delay=30.0), 0.05, ShadowOutcome.TIMEOUT, "no complete answer within 0.05s"),
    ],
    ids=["gateway-error", "bug", "timeout"],
)
async def test_mirror_failures_are_recorded_never_raised(
    mirror: Mirror, total: float | None, outcome: ShadowOutcome, error: str
) -> None:
    recorder = Recorder()
    stage = Shadowing(on_result=recorder)
    assert await through(stage, route(mirror, total=total)) == list(ANSWER)
    await settled(stage)
    (record,) = recorder.records
    assert (record.outcome, record.error) == (outcome, error)


async def test_a_failing_hook_never_reaches_the_caller() -> None:
    def broken(record: ShadowRecord) -> None:
        raise RuntimeError("telemetry down")

    stage = Shadowing(max_in_flight=1, on_result=broken)
    slow = route(Mirror(delay=0.05))
    # The second call is dropped: the hook runs on the caller's path.
    assert await through(stage, slow) == list(ANSWER)
    assert await through(stage, slow) == list(ANSWER)
    await settled(stage)
    assert stage.dropped == 1


async def test_a_mirror_honours_its_targets_connect_timeout() -> None:
    recorder = Recorder()
    stage = Shadowing(timeout=5.0, on_result=recorder)
    pool = HttpClientPool()
    with unconnectable() as base_url:
        mirrored = RouteConfig.model_validate(
            {
                "name": "r",
                "route_type": "llm/v1/chat",
                "model": {"provider": "mock"},
                "shadow": {
                    "sample": 1.0,
                    "target": {
                        "model": {"provider": "vllm", "name": "m", "api_base": base_url},
                        "timeouts": {"connect": 0.05},
                    },
                },
            }
        )
        try:
            assert await through(stage, build_route(mirrored, pool)) == list(ANSWER)
            await settled(stage)
        finally:
            await pool.aclose()
    (record,) = recorder.records
    assert (record.outcome, record.error) == (
        ShadowOutcome.FAILURE,
        "UNAVAILABLE: vllm: could not connect in time",
    )
    assert record.duration < 1.0
