"""Conformance: every recorded provider sample, replayed by a real loopback
HTTP server through a running Sluice, reaches a gRPC caller exactly.

Each sample is served whole, split at random byte boundaries (three seeds),
and in small chunks with delays between them; the caller's stream (text,
reasoning, tool calls with parsed arguments, finish reason, usage, error
status) is asserted against values read off the recording, and the fake
upstream checks the request it received (method, path, headers, body).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from sluice_client.v1 import gateway_pb2 as pb
from tests.gateway import route, running_gateway
from tests.recordings import recording
from tests.upstream import FakeUpstream, Reply, SeenRequest

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
EVENTSTREAM = "application/vnd.amazon.eventstream"
KEY = "sk-conformance-key"


@dataclass(frozen=True)
class Sample:
    fixture: str
    provider: str
    path: str  # the request's path and query, as the upstream must see it
    route_type: str = "llm/v1/chat"
    model: str = "test-model"
    settings: dict[str, Any] = field(default_factory=dict)  # more `model:` keys
    content_type: str = SSE
    http_status: int = 200
    # What the caller must receive.
    text: str = ""
    reasoning: str = ""
    tool_calls: Sequence[tuple[str, str, dict[str, Any]]] = ()
    finish: int | None = None  # pb.FinishReason; None when the call fails
    usage: tuple[int, int, int, int, bool] | None = None  # in, out, cached, reasoning, unreported
    start: tuple[str, str] | None = None  # id, model
    error: grpc.StatusCode | None = None
    error_message: str = ""
    check_request: Callable[[SeenRequest], None] | None = None


def bearer(request: SeenRequest) -> None:
    assert request.headers["authorization"] == f"Bearer {KEY}"


def openai_chat_body(request: SeenRequest) -> None:
    bearer(request)
    body = request.json()
    assert body["model"] == "test-model"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"][-1] == {"role": "user", "content": "hi"}


def anthropic_body(request: SeenRequest) -> None:
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    body = request.json()
    assert (body["model"], body["stream"]) == ("test-model", True)
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


SAMPLES = [
    Sample(
        "openai_chat_stream.txt",
        "openai",
        "/v1/chat/completions",
        text=(
            "I'm unable to provide real-time weather updates. To get the current weather in "
            "San Francisco, I recommend checking a reliable weather website or a weather app."
        ),
        finish=pb.FINISH_REASON_STOP,
        usage=(14, 30, 0, 0, False),
        start=("chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL", "gpt-4o-2024-08-06"),
        check_request=openai_chat_body,
    ),
    Sample(
        "openai_chat_tool_calls_stream.txt",
        "openai",
        "/v1/chat/completions",
        tool_calls=[
            (
                "call_JMW1whyEaYG438VE1OIflxA2",
                "GetWeatherArgs",
                {"city": "Edinburgh", "country": "GB", "units": "c"},
            ),
            (
                "call_DNYTawLBoN8fj3KN6qU9N1Ou",
                "get_stock_price",
                {"ticker": "AAPL", "exchange": "NASDAQ"},
            ),
        ],
        finish=pb.FINISH_REASON_TOOL_CALLS,
        usage=(149, 60, 0, 0, False),
        check_request=openai_chat_body,
    ),
    Sample(
        "openai_completions_stream.txt",
        "openai",
        "/v1/completions",
        route_type="llm/v1/completions",
        text='The holiday is called "Gratitude Day" and it is a day dedicated to',
        finish=pb.FINISH_REASON_LENGTH,
        usage=(14, 16, 0, 0, False),
        start=("cmpl-D8ZFN477TMm6AoQohx2jSTOJMh60M", "gpt-3.5-turbo-instruct:20230824-v2"),
    ),
    Sample(
        "openai_chat_error_midstream.txt",
        "openai",
        "/v1/chat/completions",
        text="I'm",
        error=grpc.StatusCode.UNAVAILABLE,
        error_message=(
            "openai: The server had an error while processing your request. Sorry about that!"
        ),
    ),
    Sample(
        "vllm_chat_stream.txt",
        "openai",
        "/v1/chat/completions",
        text="Okay. Sure.",
        finish=pb.FINISH_REASON_STOP,
        usage=(0, 0, 0, 0, True),
        start=("chatcmpl-f42e8ae7ddb346e1adfba47e3d710b46", "deepseek-ai/DeepSeek-V3.1"),
    ),
    Sample(
        "vllm_error_midstream.txt",
        "openai",
        "/v1/chat/completions",
        text="Okay",
        error=grpc.StatusCode.INVALID_ARGUMENT,
        error_message=(
            "openai: The decoder prompt (length 131073) is longer than the maximum model "
            "length of 131072."
        ),
    ),
    Sample(
        "ollama_openai_compat_stream.txt",
        "openai",
        "/v1/chat/completions",
        text="The sky is blue.",
        finish=pb.FINISH_REASON_STOP,
        usage=(26, 5, 0, 0, False),
        start=("chatcmpl-403", "llama3.2"),
    ),
    Sample(
        "tgi_chat_tool_stream.txt",
        "openai",
        "/v1/chat/completions",
        tool_calls=[
            ("0", "get_current_weather", {"location": "Brooklyn, NY", "format": "fahrenheit"})
        ],
        finish=pb.FINISH_REASON_TOOL_CALLS,
        usage=(0, 0, 0, 0, True),
    ),
    Sample(
        "anthropic_messages_stream.txt",
        "anthropic",
        "/v1/messages",
        reasoning=(
            "The user is asking for weather information for Florence, Italy. I have access to "
            "a weather function that takes a location parameter. The user has provided the "
            'location as "Florence, Italy" which is specific enough for the weather function. '
            "I have all the required parameters to make the function call."
        ),
        tool_calls=[("toolu_01Js4AMfx5qpTLhwTusnvT68", "weather", {"location": "Florence, Italy"})],
        finish=pb.FINISH_REASON_TOOL_CALLS,
        usage=(424, 119, 0, 0, False),
        start=("msg_01KTBB57LAzaSZs8kMNvfnsY", "claude-sonnet-4-20250514"),
        check_request=anthropic_body,
    ),
    Sample(
        "anthropic_messages_tool_use_stream.txt",
        "anthropic",
        "/v1/messages",
        text="I'll check the current weather in Paris for you.",
        tool_calls=[("toolu_01NRLabsLyVHZPKxbKvkfSMn", "get_weather", {"location": "Paris"})],
        finish=pb.FINISH_REASON_TOOL_CALLS,
        usage=(377, 65, 0, 0, False),
        check_request=anthropic_body,
    ),
    Sample(
        "anthropic_error_midstream.txt",
        "anthropic",
        "/v1/messages",
        text="Hello",
        error=grpc.StatusCode.UNAVAILABLE,
        error_message="anthropic: Overloaded",
    ),
    Sample(
        "anthropic_error_response.json",
        "anthropic",
        "/v1/messages",
        content_type="application/json",
        http_status=400,
        error=grpc.StatusCode.INVALID_ARGUMENT,
        error_message=(
            "anthropic: messages.2.content.0: unexpected `tool_use_id` found in `tool_result` "
            "blocks: srvtoolu_issue_17366_invalid. Each `tool_result` block must have a "
            "corresponding `tool_use` block in the previous message."
        ),
    ),
]

# Where each provider's api_base points, relative to the fake upstream's root.
API_BASE_SUFFIX = {"openai": "/v1"}


def replays(body: bytes, seed_text: str) -> dict[str, Reply]:
    """The ways a sample is served: whole, randomly split, slowly."""
    ways = {"whole": Reply(chunks=[body])}
    for seed in range(3):
        rng = random.Random(f"{seed_text}-{seed}")
        cuts = sorted(rng.sample(range(1, len(body)), min(len(body) - 1, rng.randint(1, 40))))
        ways[f"split-{seed}"] = Reply(
            chunks=[body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        )
    ways["delayed"] = Reply(chunks=[body[i : i + 97] for i in range(0, len(body), 97)], delay=0.002)
    return ways


@dataclass
class Received:
    responses: list[pb.ChatResponse | pb.CompleteResponse]
    error: grpc.aio.AioRpcError | None


async def call(sample: Sample, target_route: str, stub: Any) -> Received:
    responses: list[Any] = []
    if sample.route_type == "llm/v1/completions":
        stream = stub.Complete(pb.CompleteRequest(route=target_route, prompt="hi"), timeout=10)
    else:
        message = pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="hi")])
        stream = stub.Chat(pb.ChatRequest(route=target_route, messages=[message]), timeout=10)
    try:
        async for response in stream:
            responses.append(response)
    except grpc.aio.AioRpcError as error:
        return Received(responses, error)
    return Received(responses, None)


def check(sample: Sample, received: Received) -> None:
    responses = received.responses
    events = [r.WhichOneof("event") for r in responses]
    deltas = [r.delta for r in responses if r.HasField("delta")]
    assert "".join(d.text for d in deltas) == sample.text
    assert "".join(d.reasoning for d in deltas) == sample.reasoning
    calls: dict[int, list[str]] = {}
    for delta in deltas:
        if delta.HasField("tool_call"):
            fragment = delta.tool_call
            entry = calls.setdefault(fragment.index, ["", "", ""])
            entry[0] = entry[0] or fragment.id
            entry[1] = entry[1] or fragment.name
            entry[2] += fragment.arguments
    assert [(i, n, json.loads(a)) for i, n, a in calls.values()] == list(sample.tool_calls)
    if sample.start is not None:
        assert (responses[0].start.id, responses[0].start.model) == sample.start
    if sample.error is not None:
        assert received.error is not None, "a failed upstream must end with an error status"
        assert received.error.code() == sample.error
        assert received.error.details() == sample.error_message
        assert "finish" not in events
        return
    assert received.error is None, received.error
    assert events[0] == "start"
    assert events[-2:] == ["usage", "finish"]
    assert events.count("usage") == events.count("finish") == 1
    assert responses[-1].finish.reason == sample.finish
    usage = responses[-2].usage
    assert (
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_input_tokens,
        usage.reasoning_tokens,
        usage.unreported,
    ) == sample.usage


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.fixture)
async def test_sample_reaches_the_caller_exactly(sample: Sample) -> None:
    body = recording(sample.fixture)
    for way, reply in replays(body, sample.fixture).items():
        reply.status = sample.http_status
        reply.headers = {"content-type": sample.content_type}
        async with FakeUpstream(reply) as upstream:
            model = {
                "provider": sample.provider,
                "name": sample.model,
                "api_base": upstream.base_url + API_BASE_SUFFIX.get(sample.provider, ""),
                "api_key": KEY,
                **sample.settings,
            }
            config = {"routes": [route("r", sample.route_type, **model)]}
            async with running_gateway(config) as gateway:
                received = await call(sample, "r", gateway.stub)
            try:
                check(sample, received)
                (seen,) = upstream.requests
                assert (seen.method, seen.path) == ("POST", sample.path)
                if sample.check_request is not None:
                    sample.check_request(seen)
            except AssertionError as failure:
                raise AssertionError(f"served {way}: {failure}") from failure
