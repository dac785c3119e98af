"""Coalesced streaming through a real server: deltas that arrive together
leave in one message, tokens that arrive apart leave apart, and routes may
opt out or trade a short wait for fewer messages."""

from __future__ import annotations

from typing import Any

from sluice_client.v1 import gateway_pb2 as pb
from tests.gateway import RunningGateway, route, running_gateway
from tests.recordings import recording
from tests.upstream import FakeUpstream, Reply

TEXT_PREFIX = "I'm unable to provide real-time weather updates."


def sse_events() -> list[bytes]:
    """The recorded OpenAI stream, one SSE event each."""
    body = recording("openai_chat_stream.txt")
    return [event + b"\n\n" for event in body.split(b"\n\n") if event.strip()]


def content_chunks() -> int:
    """Events of the recording that carry text: one delta each, uncoalesced."""
    return sum(
        1 for event in sse_events() if b'"content":"' in event and b'"content":""' not in event
    )


def openai_route(upstream: FakeUpstream, **keys: Any) -> dict[str, object]:
    entry = route("gpt", provider="openai", name="gpt-4o", api_base=f"{upstream.base_url}/v1")
    return {"routes": [{**entry, **keys}]}


async def deltas(gateway: RunningGateway, request: pb.ChatRequest | None = None) -> list[str]:
    """The text of each delta message of one Chat call, checked whole."""
    request = request or pb.ChatRequest(
        route="gpt", messages=[pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="hi")])]
    )
    responses = [response async for response in gateway.stub.Chat(request, timeout=10)]
    kinds = [response.WhichOneof("event") for response in responses]
    assert kinds[0] == "start"
    assert kinds[-2:] == ["usage", "finish"]
    texts = [response.delta.text for response in responses if response.HasField("delta")]
    assert "".join(texts).startswith(TEXT_PREFIX)
    return texts


async def test_deltas_that_arrive_together_leave_in_one_message() -> None:
    whole = Reply(chunks=[b"".join(sse_events())])
    async with FakeUpstream(whole) as upstream, running_gateway(openai_route(upstream)) as gateway:
        texts = await deltas(gateway)
    assert len(texts) == 1


async def test_a_route_may_opt_out_and_get_one_message_per_upstream_delta() -> None:
    whole = Reply(chunks=[b"".join(sse_events())])
    async with FakeUpstream(whole) as upstream:
        config = openai_route(upstream, stream={"coalesce": False})
        async with running_gateway(config) as gateway:
            texts = await deltas(gateway)
    assert len(texts) == content_chunks()


async def test_tokens_that_arrive_apart_leave_apart() -> None:
    paced = Reply(chunks=sse_events(), delay=0.01)
    async with FakeUpstream(paced) as upstream, running_gateway(openai_route(upstream)) as gateway:
        texts = await deltas(gateway)
    assert len(texts) == content_chunks()


async def test_a_flush_window_trades_a_short_wait_for_fewer_messages() -> None:
    # The first token after a pause, the others 5 ms apart.
    events = sse_events()
    paced = Reply(chunks=events, delays=[0.0, 0.05, *[0.005] * (len(events) - 2)])
    async with FakeUpstream(paced) as upstream:
        config = openai_route(upstream, stream={"max_delay_ms": 40})
        async with running_gateway(config) as gateway:
            texts = await deltas(gateway)
    # 5 ms apart, a 40 ms window: several tokens a message, the first alone.
    assert 2 <= len(texts) <= content_chunks() // 3
    assert texts[0] == "I'm"


async def test_a_target_setting_wins_over_its_route() -> None:
    whole = Reply(chunks=[b"".join(sse_events())])
    async with FakeUpstream(whole) as upstream:
        model = {"provider": "openai", "name": "gpt-4o", "api_base": f"{upstream.base_url}/v1"}
        config = {
            "routes": [
                {
                    "name": "gpt",
                    "route_type": "llm/v1/chat",
                    "stream": {"coalesce": True},
                    "targets": [{"model": model, "stream": {"coalesce": False}}],
                }
            ]
        }
        async with running_gateway(config) as gateway:
            texts = await deltas(gateway)
    assert len(texts) == content_chunks()


async def test_cached_replays_are_coalesced() -> None:
    paced = Reply(chunks=sse_events(), delay=0.002)
    async with FakeUpstream(paced) as upstream:
        config = openai_route(upstream, cache={"ttl": 60})
        request = pb.ChatRequest(
            route="gpt",
            messages=[pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="hi")])],
            generation=pb.GenerationConfig(temperature=0),
        )
        async with running_gateway(config) as gateway:
            first = await deltas(gateway, request)
            replayed = await deltas(gateway, request)
    assert len(first) > 1
    assert replayed == ["".join(first)]
