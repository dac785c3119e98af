"""A real Sluice server streams real provider bytes from a loopback upstream."""

from __future__ import annotations

import json

import grpc
import pytest

from sluice_client.v1 import gateway_pb2 as pb
from tests.gateway import RunningGateway, route, running_gateway
from tests.recordings import recording
from tests.upstream import FakeUpstream, Reply


def chat(text: str, route_name: str) -> pb.ChatRequest:
    return pb.ChatRequest(
        route=route_name, messages=[pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text=text)])]
    )


async def collect(gateway: RunningGateway, request: pb.ChatRequest) -> list[pb.ChatResponse]:
    return [response async for response in gateway.stub.Chat(request, timeout=10)]


def every_n_bytes(body: bytes, n: int) -> list[bytes]:
    return [body[i : i + n] for i in range(0, len(body), n)]


@pytest.mark.parametrize("chunk_size", [7, 64, 100_000])
async def test_openai_stream_reaches_the_caller_event_by_event(chunk_size: int) -> None:
    body = recording("openai_chat_stream.txt")
    async with (
        FakeUpstream(Reply(chunks=every_n_bytes(body, chunk_size))) as upstream,
        running_gateway(
            {
                "routes": [
                    route(
                        "gpt",
                        provider="openai",
                        name="gpt-4o-2024-08-06",
                        api_base=f"{upstream.base_url}/v1",
                        api_key="{{ secrets.KEY }}",
                    )
                ]
            },
            {"KEY": "sk-test-integration-key"},
        ) as gateway,
    ):
        responses = await collect(gateway, chat("What's the weather like in SF?", "gpt"))

    kinds = [r.WhichOneof("event") for r in responses]
    assert kinds[0] == "start"
    assert kinds[-2:] == ["usage", "finish"]
    assert set(kinds[1:-2]) == {"delta"}
    start = responses[0].start
    assert (start.id, start.model, start.provider, start.route) == (
        "chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL",
        "gpt-4o-2024-08-06",
        "openai",
        "gpt",
    )
    text = "".join(r.delta.text for r in responses[1:-2])
    assert text.startswith("I'm unable to provide real-time weather updates.")
    assert responses[-2].usage.input_tokens == 14
    assert responses[-2].usage.output_tokens > 0
    assert responses[-1].finish.reason == pb.FINISH_REASON_STOP

    (seen,) = upstream.requests
    assert (seen.method, seen.path) == ("POST", "/v1/chat/completions")
    assert seen.headers["authorization"] == "Bearer sk-test-integration-key"
    body_sent = seen.json()
    assert body_sent["stream"] is True
    assert body_sent["stream_options"] == {"include_usage": True}
    assert body_sent["messages"] == [{"role": "user", "content": "What's the weather like in SF?"}]


async def test_anthropic_stream_with_reasoning_and_tool_call() -> None:
    body = recording("anthropic_messages_stream.txt")
    async with (
        FakeUpstream(Reply(chunks=every_n_bytes(body, 50))) as upstream,
        running_gateway(
            {
                "routes": [
                    route(
                        "claude",
                        provider="anthropic",
                        name="claude-sonnet-4-20250514",
                        api_base=upstream.base_url,
                        api_key="sk-ant-integration",
                    )
                ]
            }
        ) as gateway,
    ):
        responses = await collect(gateway, chat("What's the weather in Florence, Italy?", "claude"))

    (seen,) = upstream.requests
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == "sk-ant-integration"
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.json()["max_tokens"] == 4096
    reasoning = "".join(r.delta.reasoning for r in responses if r.HasField("delta"))
    assert reasoning.startswith("The user is asking for weather information for Florence, Italy.")
    calls = [r.delta.tool_call for r in responses if r.delta.HasField("tool_call")]
    assert calls[0].id
    assert calls[0].name
    arguments = json.loads("".join(call.arguments for call in calls))
    assert arguments == {"location": "Florence, Italy"}
    assert responses[-2].usage.input_tokens == 424
    assert responses[-1].finish.reason == pb.FINISH_REASON_TOOL_CALLS
    assert responses[-1].finish.provider_reason == "tool_use"


async def test_one_pooled_connection_serves_sequential_calls() -> None:
    body = recording("openai_chat_stream.txt")
    async with (
        FakeUpstream(Reply(chunks=[body])) as upstream,
        running_gateway(
            {
                "routes": [
                    route("a", provider="openai", name="m", api_base=f"{upstream.base_url}/v1"),
                    route("b", provider="openai", name="m", api_base=f"{upstream.base_url}/v1/"),
                ]
            }
        ) as gateway,
    ):
        for name in ["a", "b", "a", "b", "a"]:
            responses = await collect(gateway, chat("hi", name))
            assert responses[-1].finish.reason == pb.FINISH_REASON_STOP
        assert len(upstream.requests) == 5
        assert len(upstream.connections) == 1
        assert "authorization" not in upstream.requests[0].headers


async def test_mock_route_streams_word_by_word_and_answers_every_rpc() -> None:
    async with running_gateway(
        {
            "routes": [
                route("chat", provider="mock", reply="one two three"),
                route("complete", "llm/v1/completions", provider="mock", reply="four five"),
                route("embed", "llm/v1/embeddings", provider="mock", dimensions=3),
            ]
        }
    ) as gateway:
        responses = await collect(gateway, chat("a b", "chat"))
        completion = [
            r async for r in gateway.stub.Complete(pb.CompleteRequest(route="complete", prompt="x"))
        ]
        embedded = await gateway.stub.Embed(pb.EmbedRequest(route="embed", inputs=["p", "q"]))
        routes = await gateway.stub.ListRoutes(pb.ListRoutesRequest())

    assert [r.delta.text for r in responses[1:-2]] == ["one", " two", " three"]
    assert (responses[-2].usage.input_tokens, responses[-2].usage.output_tokens) == (2, 3)
    assert "".join(r.delta.text for r in completion[1:-2]) == "four five"
    assert completion[-1].finish.reason == pb.FINISH_REASON_STOP
    assert [len(e.values) for e in embedded.embeddings] == [3, 3]
    assert (embedded.model, embedded.provider, embedded.route) == ("mock", "mock", "embed")
    assert embedded.embeddings[0].values != embedded.embeddings[1].values
    assert [(r.name, r.route_type) for r in routes.routes] == [
        ("chat", pb.ROUTE_TYPE_CHAT),
        ("complete", pb.ROUTE_TYPE_COMPLETIONS),
        ("embed", pb.ROUTE_TYPE_EMBEDDINGS),
    ]


async def test_route_max_tokens_default_and_request_override() -> None:
    config = {
        "routes": [
            route("chat", provider="mock", reply="a b c d e") | {"config": {"max_tokens": 2}}
        ]
    }
    async with running_gateway(config) as gateway:
        by_default = await collect(gateway, chat("x", "chat"))
        request = chat("x", "chat")
        request.generation.max_tokens = 4
        overridden = await collect(gateway, request)
    assert [r.delta.text for r in by_default[1:-2]] == ["a", " b"]
    assert by_default[-1].finish.reason == pb.FINISH_REASON_LENGTH
    assert len(overridden) == 4 + 3


async def test_wrong_rpc_for_route_type_is_invalid_argument() -> None:
    async with running_gateway(
        {"routes": [route("embed", "llm/v1/embeddings", provider="mock")]}
    ) as gateway:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await collect(gateway, chat("x", "embed"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "answers llm/v1/embeddings, not llm/v1/chat" in (caught.value.details() or "")


async def test_openai_legacy_completions_stream() -> None:
    body = recording("openai_completions_stream.txt")
    async with (
        FakeUpstream(Reply(chunks=every_n_bytes(body, 33))) as upstream,
        running_gateway(
            {
                "routes": [
                    route(
                        "instruct",
                        "llm/v1/completions",
                        provider="openai",
                        name="gpt-3.5-turbo-instruct",
                        api_base=f"{upstream.base_url}/v1",
                    )
                ]
            }
        ) as gateway,
    ):
        request = pb.CompleteRequest(route="instruct", prompt="Say this is a test")
        request.generation.max_tokens = 7
        responses = [r async for r in gateway.stub.Complete(request, timeout=10)]

    (seen,) = upstream.requests
    assert seen.path == "/v1/completions"
    sent = seen.json()
    assert (sent["prompt"], sent["max_tokens"], sent["stream"]) == ("Say this is a test", 7, True)
    assert sent["stream_options"] == {"include_usage": True}
    assert responses[0].start.model == "gpt-3.5-turbo-instruct:20230824-v2"
    assert responses[0].start.route == "instruct"
    text = "".join(r.delta.text for r in responses)
    assert text == 'The holiday is called "Gratitude Day" and it is a day dedicated to'
    assert (responses[-2].usage.input_tokens, responses[-2].usage.output_tokens) == (14, 16)
    assert responses[-1].finish.reason == pb.FINISH_REASON_LENGTH
