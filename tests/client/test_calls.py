"""Calls over a real channel, with both clients: streaming, aggregation,
unary calls, what the client sends, deadlines and cancellation."""

from __future__ import annotations

import pytest

from sluice_client import (
    DeadlineExceededError,
    Embeddings,
    FinishReason,
    InternalError,
    ToolCall,
    Usage,
    system,
    user,
)
from sluice_client.v1 import gateway_pb2 as pb
from tests.client.conftest import (
    CHAT_SCRIPT,
    FINISH,
    FIRST_DELTA,
    START,
    Connect,
    Driver,
    Gateway,
    Pause,
)


async def test_chat_folds_the_stream_into_a_reply(client: Driver) -> None:
    reply = await client.chat("chat", [system("Be brief."), user("Weather in Paris?")])

    assert (reply.id, reply.model, reply.provider, reply.route) == (
        "resp-1",
        "gpt-test",
        "openai",
        "chat",
    )
    assert reply.text == "Let me check."
    assert reply.reasoning == "The user wants weather."
    assert reply.tool_calls == (
        ToolCall("call_a", "weather", '{"city": "Paris"}'),
        ToolCall("call_b", "clock", "{}"),
    )
    assert reply.tool_calls[0].parsed_arguments() == {"city": "Paris"}
    assert reply.finish_reason is FinishReason.TOOL_CALLS
    assert reply.provider_reason == "tool_calls"
    assert reply.usage == Usage(
        input_tokens=12, output_tokens=30, cached_input_tokens=4, reasoning_tokens=9
    )


async def test_chat_stream_yields_each_event_in_order(client: Driver) -> None:
    events: list[pb.ChatResponse] = []
    await client.chat_events(events, "chat", "Hi")

    assert [event.WhichOneof("event") for event in events] == ["start"] + ["delta"] * 8 + [
        "usage",
        "finish",
    ]
    assert [getattr(e, e.WhichOneof("event") or "") for e in events] == CHAT_SCRIPT


async def test_chat_sends_the_built_request(client: Driver, gateway: Gateway) -> None:
    await client.chat(
        "chat",
        "Hi",
        generation={"max_tokens": 64},
        tools=[{"name": "clock"}],
        tool_choice="required",
        labels={"team": "search"},
    )

    assert gateway.servicer.last.request == pb.ChatRequest(
        route="chat",
        messages=[user("Hi")],
        generation=pb.GenerationConfig(max_tokens=64),
        tools=[pb.Tool(name="clock")],
        tool_choice=pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED),
        labels={"team": "search"},
    )


async def test_complete_streams_and_folds_a_completion(client: Driver, gateway: Gateway) -> None:
    gateway.servicer.script = [
        pb.Start(id="cmpl-1", model="base", provider="vllm", route="complete"),
        pb.Delta(text="Once upon"),
        pb.Delta(text=" a time"),
        pb.Usage(input_tokens=3, output_tokens=4),
        pb.Finish(reason=pb.FINISH_REASON_LENGTH, provider_reason="length"),
    ]
    events: list[pb.CompleteResponse] = []
    await client.complete_events(events, "complete", "Tell me a story")
    reply = await client.complete(
        "complete", "Tell me a story", generation=pb.GenerationConfig(temperature=0.0)
    )

    assert [event.delta.text for event in events if event.HasField("delta")] == [
        "Once upon",
        " a time",
    ]
    assert reply.text == "Once upon a time"
    assert reply.tool_calls == ()
    assert reply.finish_reason == "LENGTH"
    assert reply.usage == Usage(input_tokens=3, output_tokens=4)
    assert gateway.servicer.last.request == pb.CompleteRequest(
        route="complete",
        prompt="Tell me a story",
        generation=pb.GenerationConfig(temperature=0.0),
    )


async def test_a_stream_without_finish_is_an_incomplete_reply(
    client: Driver, gateway: Gateway
) -> None:
    gateway.servicer.script = [pb.Start(id="r"), pb.Delta(text="Hel")]

    with pytest.raises(InternalError) as caught:
        await client.chat("chat", "Hi")

    assert caught.value.reason == "STREAM_INCOMPLETE"


async def test_embed_returns_one_vector_per_input(client: Driver, gateway: Gateway) -> None:
    embeddings = await client.embed("embed", ["a", "b"], dimensions=2, labels={"k": "v"})

    assert embeddings == Embeddings(
        vectors=[[0.0, 0.5], [1.0, 0.5]],
        model="embed-test",
        provider="mock",
        route="embed",
        usage=Usage(input_tokens=2),
    )
    assert gateway.servicer.last.request == pb.EmbedRequest(
        route="embed", inputs=["a", "b"], dimensions=2, labels={"k": "v"}
    )


async def test_list_routes(client: Driver) -> None:
    routes = await client.list_routes()

    assert [(route.name, route.route_type) for route in routes] == [("chat", pb.ROUTE_TYPE_CHAT)]
    assert routes[0].targets[0].model == "gpt-test"


async def test_api_key_and_metadata_go_with_every_call(connect: Connect, gateway: Gateway) -> None:
    client = connect(api_key="sk-test", metadata={"x-tenant": "acme"})

    await client.chat("chat", "Hi")
    await client.list_routes()

    for received in gateway.servicer.received:
        assert received.metadata["authorization"] == "Bearer sk-test"
        assert received.metadata["x-tenant"] == "acme"


async def test_no_api_key_sends_no_authorization(client: Driver, gateway: Gateway) -> None:
    await client.embed("embed", ["a"])

    assert "authorization" not in gateway.servicer.last.metadata


async def test_the_default_timeout_is_each_calls_deadline(
    connect: Connect, gateway: Gateway
) -> None:
    client = connect(timeout=30)

    await client.chat("chat", "Hi")
    await client.embed("embed", ["a"])
    await client.chat("chat", "Hi", timeout=5)

    # gRPC rounds a deadline up as it encodes it, so it may arrive a bit longer.
    remaining = [received.time_remaining for received in gateway.servicer.received]
    assert remaining == [
        pytest.approx(30, abs=1),
        pytest.approx(30, abs=1),
        pytest.approx(5, abs=1),
    ]


async def test_without_a_timeout_a_call_has_no_deadline(client: Driver, gateway: Gateway) -> None:
    await client.chat("chat", "Hi")

    assert gateway.servicer.last.time_remaining is None


async def test_a_deadline_passing_mid_stream_raises_after_the_first_events(
    client: Driver, gateway: Gateway
) -> None:
    gateway.servicer.script = [START, FIRST_DELTA, Pause(30), FINISH]
    events: list[pb.ChatResponse] = []

    with pytest.raises(DeadlineExceededError):
        await client.chat_events(events, "chat", "Hi", timeout=1)

    assert events == [pb.ChatResponse(start=START), pb.ChatResponse(delta=FIRST_DELTA)]


async def test_closing_a_stream_early_cancels_the_call(client: Driver, gateway: Gateway) -> None:
    gateway.servicer.script = [START, Pause(30), FINISH]

    first = await client.first_event_then_close("chat", "Hi")

    assert first.start.id == "resp-1"
    assert gateway.servicer.cancelled.wait(timeout=5)
