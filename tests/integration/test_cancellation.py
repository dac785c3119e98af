"""A caller that cancels or runs out of deadline closes the upstream request
at once: within one chunk, before and after the first token."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest

from sluice_client.v1 import gateway_pb2 as pb
from tests.gateway import route, running_gateway
from tests.recordings import recording
from tests.upstream import FakeUpstream, Reply

CHUNK_INTERVAL = 0.2


def slow_openai_stream() -> Reply:
    """The recorded stream, one SSE event a chunk, a chunk every 200 ms."""
    events = recording("openai_chat_stream.txt").split(b"\n\n")
    return Reply(chunks=[event + b"\n\n" for event in events if event], delay=CHUNK_INTERVAL)


def openai_route(upstream: FakeUpstream) -> dict[str, object]:
    return {"routes": [route("gpt", provider="openai", name="m", api_base=upstream.base_url)]}


REQUEST = pb.ChatRequest(
    route="gpt", messages=[pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="hi")])]
)


async def cancel_after_first_token(upstream: FakeUpstream, call: Any) -> None:
    """Cancel `call` at its first delta: the upstream closes within one chunk."""
    async for response in call:
        if response.WhichOneof("event") == "delta":
            break
    sent_at_cancel = upstream.chunks_sent
    cancelled_at = time.monotonic()
    call.cancel()
    (connection,) = upstream.connections
    await asyncio.wait_for(connection.closed_event.wait(), CHUNK_INTERVAL * 2)
    assert connection.closed is not None
    assert connection.closed - cancelled_at < CHUNK_INTERVAL
    assert upstream.chunks_sent <= sent_at_cancel + 1


async def test_cancel_after_first_token_closes_upstream_within_one_chunk() -> None:
    async with (
        FakeUpstream(slow_openai_stream()) as upstream,
        running_gateway(openai_route(upstream)) as gateway,
    ):
        await cancel_after_first_token(upstream, gateway.stub.Chat(REQUEST))


def limited_cached_route(upstream: FakeUpstream) -> dict[str, object]:
    """The same upstream behind every stage that acts on a stream: limits
    (settled when it ends) and the cache (which stores it when it ends)."""
    entry = route("gpt", provider="openai", name="m", api_base=upstream.base_url)
    entry["limits"] = {"requests": "100/minute", "tokens": "100000/minute", "concurrent": 4}
    entry["cache"] = {"ttl": 60}
    return {"routes": [entry]}


async def test_cancel_through_limits_and_cache_closes_upstream_within_one_chunk() -> None:
    async with (
        FakeUpstream(slow_openai_stream()) as upstream,
        running_gateway(limited_cached_route(upstream)) as gateway,
    ):
        cached = pb.ChatRequest()
        cached.CopyFrom(REQUEST)
        cached.generation.temperature = 0  # so the answer would be stored
        await cancel_after_first_token(upstream, gateway.stub.Chat(cached))
        # Nothing was stored: the same request goes upstream again.
        again = gateway.stub.Chat(cached)
        first = await again.read()
        assert isinstance(first, pb.ChatResponse)
        assert not first.start.cache_hit
        assert len(upstream.requests) == 2
        again.cancel()


@pytest.mark.parametrize(
    "stalled",
    [
        pytest.param(Reply(chunks=[b"data: {}\n\n"], head_delay=30), id="before-headers"),
        pytest.param(Reply(chunks=[b"data: {}\n\n"], delay=30), id="before-first-token"),
    ],
)
async def test_cancel_before_first_token_closes_upstream(stalled: Reply) -> None:
    async with (
        FakeUpstream(stalled) as upstream,
        running_gateway(openai_route(upstream)) as gateway,
    ):
        call = gateway.stub.Chat(REQUEST)
        reader = asyncio.ensure_future(call.read())
        await upstream.request_seen.wait()
        cancelled_at = time.monotonic()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        (connection,) = upstream.connections
        await asyncio.wait_for(connection.closed_event.wait(), 1)
        assert connection.closed is not None
        assert connection.closed - cancelled_at < CHUNK_INTERVAL


async def test_deadline_closes_upstream_and_reports_deadline_exceeded() -> None:
    async with (
        FakeUpstream(slow_openai_stream()) as upstream,
        running_gateway(openai_route(upstream)) as gateway,
    ):
        started = time.monotonic()
        received: list[pb.ChatResponse] = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _read_into(gateway.stub.Chat(REQUEST, timeout=1.0), received)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert received, "the stream had started before the deadline"
        (connection,) = upstream.connections
        await asyncio.wait_for(connection.closed_event.wait(), 1)
        assert connection.closed is not None
        # Within a chunk of the deadline, and one more for a loaded machine's
        # scheduling: left open, it would close with the stream, seconds later.
        assert connection.closed - started < 1.0 + 2 * CHUNK_INTERVAL


async def _read_into(
    call: grpc.aio.UnaryStreamCall[pb.ChatRequest, pb.ChatResponse],
    received: list[pb.ChatResponse],
) -> None:
    async for response in call:
        received.append(response)
