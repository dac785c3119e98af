"""`model.max_connections` bounds the connections to one upstream host (per
worker): a call that finds them all busy waits for one, and is refused with
RESOURCE_EXHAUSTED (UPSTREAM_CONNECTIONS_EXHAUSTED, RetryInfo) when none
frees within the wait; a connection freed in time serves it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from sluice.providers import http
from sluice_client.v1 import gateway_pb2 as pb
from tests.gateway import RunningGateway, route, running_gateway
from tests.integration.test_upstream_failures import REQUEST, details
from tests.recordings import recording
from tests.upstream import FakeUpstream, Reply, SeenRequest

BODY = recording("openai_chat_stream.txt")
# The role and the first words: a stream that has begun, before its end.
BEGUN = b"\n\n".join(BODY.split(b"\n\n")[:3]) + b"\n\n"
WAIT = 0.5  # seconds a call waits for a busy connection (10 s when serving)


@pytest.fixture(autouse=True)
def short_pool_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "POOL_WAIT", WAIT)


def config(base_url: str, max_connections: int) -> dict[str, Any]:
    return {
        "routes": [
            route(
                "up",
                provider="openai",
                name="m",
                api_base=base_url,
                api_key="k",
                max_connections=max_connections,
            )
        ]
    }


async def held_streams(gateway: RunningGateway, count: int) -> AsyncIterator[Any]:
    """`count` calls each holding a connection: their streams have begun
    and the upstream keeps them open."""
    for _ in range(count):
        call = gateway.stub.Chat(REQUEST, timeout=10)
        await call.read()  # the start: the upstream has answered
        yield call


async def remaining(call: Any) -> list[pb.ChatResponse]:
    """What is left of a stream already read from with `read`."""
    responses = []
    while (response := await call.read()) is not grpc.aio.EOF:
        responses.append(response)
    return responses


async def test_a_call_finding_every_connection_busy_is_refused_with_a_retry_hint() -> None:
    async with (
        FakeUpstream(Reply(chunks=[BEGUN], hang=True)) as upstream,
        running_gateway(config(upstream.base_url, max_connections=2)) as gateway,
    ):
        held = [call async for call in held_streams(gateway, 2)]
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in gateway.stub.Chat(REQUEST, timeout=10):
                pass
        waited = loop.time() - began
        for call in held:
            call.cancel()

    error = refused.value
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    found = details(error)
    assert found["ErrorInfo"].reason == "UPSTREAM_CONNECTIONS_EXHAUSTED"
    assert found["RetryInfo"].retry_delay.seconds == 1
    assert waited >= WAIT  # it queued before it was refused
    # The refused call never reached the upstream: two requests, two connections.
    assert len(upstream.requests) == 2
    assert len(upstream.connections) == 2


async def test_a_connection_freed_within_the_wait_serves_the_waiting_call() -> None:
    def script(request: SeenRequest) -> Reply:
        # The first answer ends within the wait; the connection then serves the next.
        if len(upstream.requests) == 1:
            return Reply(chunks=[BEGUN, BODY[len(BEGUN) :]], delays=[0, WAIT / 3])
        return Reply(chunks=[BODY])

    async with (
        FakeUpstream(script) as upstream,
        running_gateway(config(upstream.base_url, max_connections=1)) as gateway,
    ):
        first = gateway.stub.Chat(REQUEST, timeout=10)
        await first.read()
        second = [response async for response in gateway.stub.Chat(REQUEST, timeout=10)]
        rest = await remaining(first)

    assert second[-1].WhichOneof("event") == "finish"
    assert rest[-1].WhichOneof("event") == "finish"
    assert len(upstream.requests) == 2
    assert len(upstream.connections) == 1  # one connection at a time, reused


async def test_busy_connections_of_one_route_do_not_hold_back_another_host() -> None:
    async with (
        FakeUpstream(Reply(chunks=[BEGUN], hang=True)) as busy,
        FakeUpstream(Reply(chunks=[BODY])) as free,
    ):
        routes = config(busy.base_url, max_connections=1)
        routes["routes"].append(
            route("free", provider="openai", name="m", api_base=free.base_url, api_key="k")
        )
        async with running_gateway(routes) as gateway:
            held = [call async for call in held_streams(gateway, 1)]
            other = pb.ChatRequest()
            other.CopyFrom(REQUEST)
            other.route = "free"
            answered = [response async for response in gateway.stub.Chat(other, timeout=WAIT)]
            for call in held:
                call.cancel()

    assert answered[-1].WhichOneof("event") == "finish"
