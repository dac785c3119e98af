"""Conformance: every recorded provider sample, replayed by a real loopback
HTTP server through a running Sluice, reaches a gRPC caller exactly.

Each sample is served whole, split at random byte boundaries (three seeds),
and in small chunks with delays between them; the caller's stream (text,
reasoning, tool calls with parsed arguments, finish reason, usage, error
status) is asserted against values read off the recording, and the fake
upstream checks the request it received (method, path, headers, body).
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

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
    error_metadata: dict[str, str] = field(default_factory=dict)  # a subset of ErrorInfo's
    vectors: Sequence[Sequence[float]] = ()  # Embed answers
    # The recording is a whole HTTP response (status line, headers, body).
    http_response: bool = False
    # Whether the route's `api_key` is set (Bedrock signs with AWS keys instead).
    api_key: bool = True
    check_request: Callable[[SeenRequest], None] | None = None
    # More ChatRequest fields, and more route keys, for the API items of issue 13.
    chat: dict[str, Any] = field(default_factory=dict)
    route_settings: dict[str, Any] = field(default_factory=dict)


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


def api_key_header(name: str) -> Callable[[SeenRequest], None]:
    def check(request: SeenRequest) -> None:
        assert request.headers[name] == KEY
        assert "authorization" not in request.headers

    return check


def bedrock_signed(request: SeenRequest) -> None:
    authorization = request.headers["authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDCONFORMANCE/")
    assert "/us-east-1/bedrock/aws4_request" in authorization
    body = request.json()
    assert body["messages"] == [{"role": "user", "content": [{"text": "hi"}]}]


def ollama_body(request: SeenRequest) -> None:
    body = request.json()
    assert (body["model"], body["stream"]) == ("test-model", True)
    assert body["messages"] == [{"role": "user", "content": "hi"}]


def gemini_body(request: SeenRequest) -> None:
    api_key_header("x-goog-api-key")(request)
    assert request.json()["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]


def llama_cpp_completion_body(request: SeenRequest) -> None:
    bearer(request)
    assert request.json() == {"prompt": "hi", "stream": True}


def mlflow_chat_body(request: SeenRequest) -> None:
    # MLflow's gateway sends a chat model the one message's text.
    assert request.json() == {"inputs": ["hi"]}


def sagemaker_signed(request: SeenRequest) -> None:
    """SigV4 with signing name sagemaker, valid over the bytes received."""
    authorization = request.headers["authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDCONFORMANCE/")
    assert "/us-east-1/sagemaker/aws4_request" in authorization
    names = authorization.partition("SignedHeaders=")[2].partition(",")[0].split(";")
    assert "x-amzn-sagemaker-inference-component" in names
    assert request.headers["x-amzn-sagemaker-inference-component"] == "ic-conformance"
    assert request.headers["content-type"] == "application/json"
    url = f"http://{request.headers['host']}{request.path}"
    signed = AWSRequest(
        method="POST", url=url, data=request.body, headers={n: request.headers[n] for n in names}
    )
    signed.context["timestamp"] = request.headers["x-amz-date"]
    auth = SigV4Auth(Credentials("AKIDCONFORMANCE", "conformance-secret"), "sagemaker", "us-east-1")
    signature = auth.signature(auth.string_to_sign(signed, auth.canonical_request(signed)), signed)
    assert authorization.endswith(f"Signature={signature}")


def sagemaker_body(expected: dict[str, Any]) -> Callable[[SeenRequest], None]:
    def check(request: SeenRequest) -> None:
        sagemaker_signed(request)
        assert request.json() == expected

    return check


SAGEMAKER_OPENAI_CHAT = {
    "model": "test-model",
    "messages": [{"role": "user", "content": "hi"}],
    "stream": True,
    "stream_options": {"include_usage": True},
}
TGI_BODY = {"inputs": "hi", "parameters": {"details": True}, "stream": True}


def sagemaker(style: str) -> dict[str, Any]:
    return {"endpoint_name": "test-endpoint", "payload_style": style,
            "inference_component": "ic-conformance", **BEDROCK}  # fmt: skip


SAGEMAKER_STREAM = "/endpoints/test-endpoint/invocations-response-stream"

BEDROCK = {"region": "us-east-1", "aws_access_key_id": "AKIDCONFORMANCE",
           "aws_secret_access_key": "conformance-secret"}  # fmt: skip
BEDROCK_PATH = "/model/test-model/converse-stream"

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
        # Turn 2 of the loop above; the request side is in test_reasoning_round_trip.py.
        "anthropic_messages_thinking_turn2_stream.txt",
        "anthropic",
        "/v1/messages",
        text=(
            "The current weather in Florence, Italy is 40°C (104°F). That's quite hot! If you're "
            "planning to visit or are currently there, make sure to stay hydrated and seek shade "
            "or air conditioning when possible."
        ),
        finish=pb.FINISH_REASON_STOP,
        usage=(558, 51, 0, 0, False),
        start=("msg_01G4mwZgqcFN38A9H8S9pPAA", "claude-sonnet-4-20250514"),
        check_request=anthropic_body,
    ),
    Sample(
        "anthropic_messages_redacted_thinking_stream.txt",
        "anthropic",
        "/v1/messages",
        text=(
            "I notice that you've sent what appears to be some kind of test string or command. "
            'I don\'t have any special "magic string" triggers or backdoor commands that would '
            "expose internal systems or change my behavior.\n\nI'm Claude, an AI assistant "
            "created by Anthropic to be helpful, harmless, and honest. How can I assist you "
            "today with a legitimate task or question?"
        ),
        finish=pb.FINISH_REASON_STOP,
        usage=(92, 189, 0, 0, False),
        start=("msg_018XZkwvj9asBiffg3fXt88s", "claude-sonnet-4-5-20250929"),
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
        # A completions route on Anthropic is a one-turn chat (MLflow's Anthropic example).
        "anthropic_messages_text_stream.txt",
        "anthropic",
        "/v1/messages",
        route_type="llm/v1/completions",
        text="Hello there!",
        finish=pb.FINISH_REASON_STOP,
        usage=(11, 6, 0, 0, False),
        start=("msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK", "claude-3-opus-latest"),
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
    Sample(
        "openai_embeddings_response.json",
        "openai",
        "/v1/embeddings",
        route_type="llm/v1/embeddings",
        content_type="application/json",
        vectors=[[0.0023064255, -0.009327292, -0.0028842222]],
        usage=(8, 0, 0, 0, False),
        check_request=bearer,
    ),
    Sample(
        "azure_openai_chat_stream.txt",
        "azure_openai",
        "/openai/deployments/test-model/chat/completions?api-version=2024-10-21",
        settings={"deployment": "test-model"},
        tool_calls=[("call_tWA8BJziGlCyhQEXhEHn6eXK", "weather", {"location": "Florence, Italy"})],
        finish=pb.FINISH_REASON_TOOL_CALLS,
        usage=(145, 154, 0, 128, False),
        start=("chatcmpl-DuLYtUePDgoybMkZrAI7utkb2fiRp", "gpt-5-mini-2025-08-07"),
        check_request=api_key_header("api-key"),
    ),
    Sample(
        "azure_openai_content_filter_midstream.txt",
        "azure_openai",
        "/openai/deployments/test-model/chat/completions?api-version=2024-10-21",
        settings={"deployment": "test-model"},
        text="Hey Jude, better",
        finish=pb.FINISH_REASON_CONTENT_FILTER,
        usage=(0, 0, 0, 0, True),
    ),
    Sample(
        "azure_openai_error_content_filter_400.json",
        "azure_openai",
        "/openai/deployments/test-model/chat/completions?api-version=2024-10-21",
        settings={"deployment": "test-model"},
        content_type="application/json",
        http_status=400,
        error=grpc.StatusCode.INVALID_ARGUMENT,
        error_message=(
            "azure_openai: The response was filtered due to the prompt triggering Azure Content "
            "management policy. Please modify your prompt and retry. (param: prompt)"
        ),
        error_metadata={
            "upstream_type": "content_filter",
            "content_filter_result": (
                '{"hate":{"filtered":true,"severity":"high"},"self-harm":{"filtered":true,'
                '"severity":"high"},"sexual":{"filtered":false,"severity":"safe"},'
                '"violence":{"filtered":true,"severity":"medium"}}'
            ),
        },
    ),
    Sample(
        "gemini_stream_generate_content.txt",
        "gemini",
        "/v1beta/models/test-model:streamGenerateContent?alt=sse",
        reasoning=(
            "**Determining the Weather Inquiry**\n\nI've pinpointed the user's intent: they want "
            "the weather conditions in Florence, Italy. My plan is clear \u2013 I'll activate the "
            '`weather` tool. I will set the `location` parameter to "Florence, Italy" to obtain '
            "the relevant weather data. The query seems straightforward and easily resolved.\n\n\n"
        ),
        tool_calls=[("call_0", "weather", {"location": "Florence, Italy"})],
        finish=pb.FINISH_REASON_TOOL_CALLS,
        usage=(54, 76, 0, 62, False),
        start=("zwCzaYWfAbnoz7IPmc_m6Q4", "gemini-2.5-flash"),
        check_request=gemini_body,
    ),
    Sample(
        "gemini_stream_generate_content_text.txt",
        "gemini",
        "/v1beta/models/test-model:streamGenerateContent?alt=sse",
        text="The weather in Florence,Italy is 40 C.",
        finish=pb.FINISH_REASON_STOP,
        usage=(127, 12, 0, 0, False),
        start=("WgCzaZzmMLnoz7IP_czm6Q4", "gemini-2.5-flash"),
        check_request=gemini_body,
    ),
    Sample(
        # Turn 2 of the tool loop of gemini_stream_generate_content.txt.
        "gemini_stream_generate_content_turn2.txt",
        "gemini",
        "/v1beta/models/test-model:streamGenerateContent?alt=sse",
        text="The weather in Florence, Italy is 40 C.",
        finish=pb.FINISH_REASON_STOP,
        usage=(146, 12, 0, 0, False),
        start=("0ACzaenoJ4Hnz7IPzoP0gAw", "gemini-2.5-flash"),
        check_request=gemini_body,
    ),
    Sample(
        "gemini_error_response.json",
        "gemini",
        "/v1beta/models/test-model:streamGenerateContent?alt=sse",
        content_type="application/json",
        http_status=400,
        error=grpc.StatusCode.INVALID_ARGUMENT,
        error_message="gemini: Unsupported MIME type: bad/mime_type",
        error_metadata={"upstream_type": "INVALID_ARGUMENT"},
    ),
    Sample(
        "cohere_v2_chat_stream.txt",
        "cohere",
        "/v2/chat",
        text="The capital of France is Paris.",
        finish=pb.FINISH_REASON_STOP,
        usage=(507, 10, 448, 0, False),
        start=("321d178c-2c12-44d3-ae42-2f5510f6b1cc", "test-model"),
        check_request=bearer,
    ),
    Sample(
        "cohere_v2_chat_tool_stream.txt",
        "cohere",
        "/v2/chat",
        reasoning=(
            "I will use the weather tool to find the weather in San Francisco and the "
            "cityAttractions tool to find attractions in San Francisco."
        ),
        tool_calls=[
            ("weather_e8p4pn45zt0t", "weather", {"location": "San Francisco"}),
            ("cityAttractions_pyxssbwnq9fq", "cityAttractions", {"city": "San Francisco"}),
        ],
        finish=pb.FINISH_REASON_TOOL_CALLS,
        usage=(1549, 95, 1504, 0, False),
    ),
    Sample(
        "cohere_error_response.json",
        "cohere",
        "/v2/chat",
        content_type="application/json",
        http_status=400,
        error=grpc.StatusCode.INVALID_ARGUMENT,
        error_message="cohere: invalid request: model 'command-x' not found",
        error_metadata={"upstream_request_id": "2c2f0a0e-6c8d-4b7e-9d0a-3c1a9c7f1e11"},
    ),
    Sample(
        "mistral_chat_stream.txt",
        "mistral",
        "/v1/chat/completions",
        text=(
            "To cross the street safely, follow these steps:\n\n1. Look both ways to check for "
            "oncoming traffic.\n2. Use a crosswalk if one is available.\n3. Obey any traffic "
            "signals or signs that may be present.\n4. Proceed with caution until you have safely "
            "reached the other side.\n\n```markdown\nTo cross the street safely, follow these "
            "steps:\n\n1. Look both ways to check for oncoming traffic.\n2. Use a crosswalk if one "
            "is available.\n3. Obey any traffic signals or signs that may be present.\n4. Proceed "
            "with caution until you have safely reached the other side.\n```\n\nBy following these "
            "steps, you can ensure a safe crossing."
        ),
        reasoning=(
            "Okay, the user is asking how to cross the street. I know that crossing the street "
            "safely involves a few key steps: first, look both ways to check for oncoming traffic; "
            "second, use a crosswalk if one is available; third, obey any traffic signals or signs "
            "that may be present; and finally, proceed with caution until you have safely reached "
            "the other side. Let me compile this information into a clear and concise response."
        ),
        finish=pb.FINISH_REASON_STOP,
        usage=(10, 232, 0, 0, False),
        start=("9f9d90210f194076abeee223863eaaf0", "magistral-medium-latest"),
        check_request=bearer,
    ),
    Sample(
        "mistral_chat_tool_stream.txt",
        "mistral",
        "/v1/chat/completions",
        tool_calls=[("gSIMJiOkT", "weather", {"location": "San Francisco"})],
        finish=pb.FINISH_REASON_TOOL_CALLS,
        usage=(124, 22, 0, 0, False),
    ),
    Sample(
        "bedrock_converse_stream_text.bin",
        "bedrock",
        BEDROCK_PATH,
        settings=BEDROCK,
        api_key=False,
        content_type=EVENTSTREAM,
        text=(
            "The capital of France is Paris. Paris is not only the capital city but also the most "
            "populous city in France, and it is a major center for culture, commerce, fashion, and "
            "international diplomacy. Known for its historical landmarks, such as the Eiffel Tower, "
            'the Louvre Museum, and Notre-Dame Cathedral, Paris is often referred to as "The City '
            'of Light" or "The City of Love."'
        ),
        finish=pb.FINISH_REASON_STOP,
        usage=(13, 82, 0, 0, False),
        start=("", "test-model"),
        check_request=bedrock_signed,
    ),
    Sample(
        "bedrock_converse_stream_tool_use.bin",
        "bedrock",
        BEDROCK_PATH,
        settings=BEDROCK,
        api_key=False,
        content_type=EVENTSTREAM,
        text=(
            "<thinking> To find the temperature of the capital of France, I need to first "
            "determine the capital of France and then get the current temperature in that city. "
            'The capital of France is Paris. I will use the "get_temperature" tool to find the '
            "current temperature in Paris.</thinking>\n"
        ),
        tool_calls=[("tooluse_lAG_zP8QRHmSYOwZzzaCqA", "get_temperature", {"city": "Paris"})],
        finish=pb.FINISH_REASON_TOOL_CALLS,
        usage=(471, 91, 0, 0, False),
    ),
    Sample(
        "bedrock_converse_stream_reasoning.bin",
        "bedrock",
        BEDROCK_PATH,
        settings=BEDROCK,
        api_key=False,
        content_type=EVENTSTREAM,
        text="Hello! It's nice to meet you. How can I help you today?",
        reasoning=(
            'The user has greeted me with a simple "Hello". I should respond in a friendly and '
            "welcoming manner. This is a straightforward greeting, so I'll respond warmly and ask "
            "how I can help them today."
        ),
        finish=pb.FINISH_REASON_STOP,
        usage=(36, 73, 0, 0, False),
    ),
    Sample(
        "bedrock_converse_stream_exception_frame.bin",
        "bedrock",
        BEDROCK_PATH,
        settings=BEDROCK,
        api_key=False,
        content_type=EVENTSTREAM,
        error=grpc.StatusCode.UNAVAILABLE,
        error_message="bedrock: Model Stream Error (model answered 500: The model stream failed.)",
    ),
    Sample(
        "bedrock_error_response.txt",
        "bedrock",
        BEDROCK_PATH,
        settings=BEDROCK,
        api_key=False,
        http_response=True,
        error=grpc.StatusCode.INVALID_ARGUMENT,
        error_message=(
            "bedrock: The content field in the Message object at messages.1 is empty. Add a "
            "ContentBlock object to the content field and try again."
        ),
        error_metadata={"upstream_type": "ValidationException", "http_status": "400"},
    ),
    Sample(
        "ollama_chat_stream.ndjson",
        "ollama",
        "/api/chat",
        content_type=NDJSON,
        text="The",
        finish=pb.FINISH_REASON_STOP,
        usage=(26, 282, 0, 0, False),
        start=("", "llama3.2"),
        check_request=ollama_body,
    ),
    Sample(
        "ollama_chat_tool_stream.ndjson",
        "ollama",
        "/api/chat",
        content_type=NDJSON,
        tool_calls=[("call_0", "get_weather", {"city": "Tokyo"})],
        finish=pb.FINISH_REASON_TOOL_CALLS,
        usage=(169, 15, 0, 0, False),
    ),
    Sample(
        "ollama_generate_stream.ndjson",
        "ollama",
        "/api/generate",
        route_type="llm/v1/completions",
        content_type=NDJSON,
        text="That's a fantastic question!",
        finish=pb.FINISH_REASON_STOP,
        usage=(0, 0, 0, 0, True),
        start=("", "gemma4"),
    ),
    Sample(
        "ollama_error_midstream.ndjson",
        "ollama",
        "/api/generate",
        route_type="llm/v1/completions",
        content_type=NDJSON,
        text=" Yes.Ican",
        error=grpc.StatusCode.UNAVAILABLE,
        error_message="ollama: an error was encountered while running the model",
    ),
    Sample(
        "tgi_generate_stream.txt",
        "tgi",
        "/generate_stream",
        route_type="llm/v1/completions",
        text=" Deep Learning is a",
        finish=pb.FINISH_REASON_STOP,
        usage=(6, 5, 0, 0, False),
        start=("", "test-model"),
    ),
    Sample(
        "tgi_error_midstream.txt",
        "tgi",
        "/generate_stream",
        route_type="llm/v1/completions",
        text=" Deep",
        error=grpc.StatusCode.UNAVAILABLE,
        error_message="tgi: Request failed during generation: Server error: CUDA out of memory",
        error_metadata={"upstream_type": "generation"},
    ),
    Sample(
        "llama_cpp_completion_stream.txt",
        "llama_cpp",
        "/completion",
        route_type="llm/v1/completions",
        text=" Hello! How can I help?",
        finish=pb.FINISH_REASON_STOP,
        usage=(13, 8, 0, 0, False),
        start=("", "test-model"),
        check_request=llama_cpp_completion_body,
    ),
    Sample(
        "llama_cpp_error_midstream.txt",
        "llama_cpp",
        "/completion",
        route_type="llm/v1/completions",
        text=" Hello",
        error=grpc.StatusCode.INVALID_ARGUMENT,
        error_message=(
            "llama_cpp: the request exceeds the available context size, try increasing it"
        ),
        error_metadata={"upstream_type": "exceed_context_size_error", "http_status": "400"},
    ),
    Sample(
        "llama_cpp_chat_stream.txt",
        "llama_cpp",
        "/v1/chat/completions",
        text=" climb",
        finish=pb.FINISH_REASON_LENGTH,
        usage=(13, 50, 0, 0, False),
        start=("chatcmpl-51VeqNldSlrUKqMP1Seka7KfXksFbSea", "phi-4"),
        check_request=openai_chat_body,
    ),
    Sample(
        "databricks_chat_stream.txt",
        "databricks",
        "/serving-endpoints/chat/completions",
        text="Hello! How can I help you today?",
        finish=pb.FINISH_REASON_STOP,
        usage=(11, 10, 0, 0, False),
        start=(
            "chatcmpl_5e0a1c5b-3b5d-4f0e-9a59-2f1f0b2b4c11",
            "meta-llama-3.3-70b-instruct-121024",
        ),
        check_request=openai_chat_body,
    ),
    Sample(
        "databricks_error_response.json",
        "databricks",
        "/serving-endpoints/chat/completions",
        content_type="application/json",
        http_status=400,
        error=grpc.StatusCode.INVALID_ARGUMENT,
        error_message='databricks: Bad request: json: unknown field "max_tokns"',
        error_metadata={"upstream_type": "BAD_REQUEST"},
    ),
    Sample(
        "mlflow_invocations_response.json",
        "mlflow",
        "/invocations",
        content_type="application/json",
        text="Paris is the capital of France.",
        finish=pb.FINISH_REASON_OTHER,
        usage=(0, 0, 0, 0, True),
        start=("", "test-model"),
        check_request=mlflow_chat_body,
    ),
    Sample(
        "mlflow_embeddings_response.json",
        "mlflow",
        "/invocations",
        route_type="llm/v1/embeddings",
        content_type="application/json",
        vectors=[[0.1, -0.234, 0.002], [0.222, -0.111, 0.134]],
        usage=(0, 0, 0, 0, True),
    ),
    Sample(
        "mlflow_error_response.json",
        "mlflow",
        "/invocations",
        content_type="application/json",
        http_status=400,
        error=grpc.StatusCode.INVALID_ARGUMENT,
        error_message=(
            'mlflow: Failed to predict data \'{"inputs": ["hi"]}\'. \nError: Model is missing '
            "inputs ['question']."
        ),
        error_metadata={"upstream_type": "BAD_REQUEST"},
    ),
]

SAMPLES += [
    Sample(
        "sagemaker_tgi_stream.bin",
        "sagemaker",
        SAGEMAKER_STREAM,
        route_type="llm/v1/completions",
        settings=sagemaker("tgi"),
        content_type=EVENTSTREAM,
        api_key=False,
        text=" Deep Learning is a",
        finish=pb.FINISH_REASON_STOP,
        usage=(6, 5, 0, 0, False),
        start=("", "test-model"),
        check_request=sagemaker_body(TGI_BODY),
    ),
    Sample(
        "sagemaker_openai_chat_stream.bin",
        "sagemaker",
        SAGEMAKER_STREAM,
        settings=sagemaker("openai"),
        content_type=EVENTSTREAM,
        api_key=False,
        text="Okay. Sure.",
        finish=pb.FINISH_REASON_STOP,
        usage=(0, 0, 0, 0, True),
        start=("chatcmpl-f42e8ae7ddb346e1adfba47e3d710b46", "deepseek-ai/DeepSeek-V3.1"),
        check_request=sagemaker_body(SAGEMAKER_OPENAI_CHAT),
    ),
    Sample(
        "sagemaker_openai_completions_stream.bin",
        "sagemaker",
        SAGEMAKER_STREAM,
        route_type="llm/v1/completions",
        settings=sagemaker("openai"),
        content_type=EVENTSTREAM,
        api_key=False,
        text='The holiday is called "Gratitude Day" and it is a day dedicated to',
        finish=pb.FINISH_REASON_LENGTH,
        usage=(14, 16, 0, 0, False),
        start=("cmpl-D8ZFN477TMm6AoQohx2jSTOJMh60M", "gpt-3.5-turbo-instruct:20230824-v2"),
        check_request=sagemaker_body(
            {
                "model": "test-model",
                "prompt": "hi",
                "stream": True,
                "stream_options": {"include_usage": True},
            }
        ),
    ),
    Sample(
        "sagemaker_jsonlines_stream.bin",
        "sagemaker",
        SAGEMAKER_STREAM,
        route_type="llm/v1/completions",
        settings=sagemaker("jsonlines"),
        content_type=EVENTSTREAM,
        api_key=False,
        text="Deep  Learning is field.",
        finish=pb.FINISH_REASON_LENGTH,
        usage=(0, 4, 0, 0, True),
        start=("", "test-model"),
        check_request=sagemaker_body(TGI_BODY),
    ),
    Sample(
        "sagemaker_jsonlines_error_midstream.bin",
        "sagemaker",
        SAGEMAKER_STREAM,
        route_type="llm/v1/completions",
        settings=sagemaker("jsonlines"),
        content_type=EVENTSTREAM,
        api_key=False,
        text="Deep  Learning is",
        error=grpc.StatusCode.UNAVAILABLE,
        error_message="sagemaker: generation failed",
    ),
    Sample(
        "sagemaker_model_stream_error.bin",
        "sagemaker",
        SAGEMAKER_STREAM,
        route_type="llm/v1/completions",
        settings=sagemaker("tgi"),
        content_type=EVENTSTREAM,
        api_key=False,
        text=" Deep Learning",
        error=grpc.StatusCode.DEADLINE_EXCEEDED,
        error_message=(
            "sagemaker: ModelInvocationTimeExceeded: The model failed to finish sending the "
            "response within the timeout period allowed by Amazon SageMaker AI."
        ),
        error_metadata={"upstream_type": "ModelStreamError"},
    ),
    Sample(
        "sagemaker_internal_stream_failure.bin",
        "sagemaker",
        SAGEMAKER_STREAM,
        settings=sagemaker("openai"),
        content_type=EVENTSTREAM,
        api_key=False,
        text="Okay",
        error=grpc.StatusCode.UNAVAILABLE,
        error_message=(
            "sagemaker: The stream processing failed because of an unknown error, exception "
            "or failure. Try your request again."
        ),
        error_metadata={"upstream_type": "InternalStreamFailure"},
    ),
    Sample(
        "sagemaker_model_error_response.txt",
        "sagemaker",
        SAGEMAKER_STREAM,
        route_type="llm/v1/completions",
        settings=sagemaker("tgi"),
        api_key=False,
        http_response=True,
        error=grpc.StatusCode.INVALID_ARGUMENT,
        error_message=(
            'sagemaker: the model answered 422: {"error":"Input validation error: '
            '`temperature` must be strictly positive","error_type":"validation"}'
        ),
        error_metadata={
            "upstream_type": "ModelError",
            "upstream_request_id": "3f0c2a8e-6d0b-4c8e-9a57-0d3c1a2b4e5f",
        },
    ),
    Sample(
        "sagemaker_embeddings_response.json",
        "sagemaker",
        "/endpoints/test-endpoint/invocations",
        route_type="llm/v1/embeddings",
        settings=sagemaker("tgi"),
        content_type="application/json",
        api_key=False,
        vectors=[[0.0, 1.0, 2.0]],
        usage=(0, 0, 0, 0, True),
        check_request=sagemaker_body({"inputs": ["hi"]}),
    ),
]

# --- the API items of issue 13, on the same recordings, request side asserted ---

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


def schema_struct() -> struct_pb2.Struct:
    schema = struct_pb2.Struct()
    schema.update(SCHEMA)
    return schema


def json_schema_format() -> pb.ResponseFormat:
    return pb.ResponseFormat(
        type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
        schema_name="city",
        schema=schema_struct(),
        strict=True,
    )


def options(value: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def asks(
    check: Callable[[dict[str, Any]], None], *also: Callable[[SeenRequest], None]
) -> Callable[[SeenRequest], None]:
    """The request check: the base checks `also`, then `check` on the body."""

    def checked(request: SeenRequest) -> None:
        for base in also:
            base(request)
        check(request.json())

    return checked


def _openai_asks(body: dict[str, Any]) -> None:
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": SCHEMA, "strict": True},
    }
    assert body["reasoning_effort"] == "low"
    assert (body["user"], body["safety_identifier"]) == ("user-7", "user-7")
    assert body["logit_bias"] == {"50256": -100}
    assert body["model"] == "test-model"
    assert body["stream"] is True


def _anthropic_asks(body: dict[str, Any]) -> None:
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 16384}
    assert body["metadata"] == {"user_id": "user-7"}
    assert body["top_k"] == 5


def _gemini_asks(body: dict[str, Any]) -> None:
    assert body["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseJsonSchema": SCHEMA,
        "thinkingConfig": {"thinkingBudget": 8192, "includeThoughts": True},
        "candidateCount": 1,
    }


def _bedrock_asks(body: dict[str, Any]) -> None:
    definition = body["outputConfig"]["textFormat"]["structure"]["jsonSchema"]
    assert json.loads(definition["schema"]) == SCHEMA
    assert body["additionalModelRequestFields"]["thinking"] == {
        "type": "enabled",
        "budget_tokens": 1024,
    }


def _cohere_asks(body: dict[str, Any]) -> None:
    assert body["response_format"] == {"type": "json_object", "json_schema": SCHEMA}


def _ollama_asks(body: dict[str, Any]) -> None:
    assert (body["format"], body["think"]) == ("json", True)


def _sagemaker_asks(body: dict[str, Any]) -> None:
    # Merged before signing: sagemaker_signed checks the signature covers it.
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA
    assert body["top_k"] == 5
    assert (body["model"], body["stream"]) == ("test-model", True)


def _mistral_asks(body: dict[str, Any]) -> None:
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA


def sample_of(fixture: str) -> Sample:
    return next(sample for sample in SAMPLES if sample.fixture == fixture)


def json_format(kind: pb.ResponseFormatType.ValueType) -> pb.ResponseFormat:
    return pb.ResponseFormat(type=kind)


def effort(level: pb.ReasoningEffort.ValueType) -> pb.GenerationConfig:
    return pb.GenerationConfig(reasoning_effort=level)


ALLOWED = {"allow_provider_options": True}
ASKS = [
    dataclasses.replace(
        sample_of("openai_chat_stream.txt"),
        chat={
            "response_format": json_schema_format(),
            "generation": effort(pb.REASONING_EFFORT_LOW),
            "end_user": "user-7",
            "provider_options": options({"openai": {"logit_bias": {"50256": -100}}}),
        },
        route_settings={"end_user": "from_request", **ALLOWED},
        check_request=asks(_openai_asks, bearer),
    ),
    dataclasses.replace(
        sample_of("anthropic_messages_tool_use_stream.txt"),
        chat={
            "response_format": json_schema_format(),
            "generation": effort(pb.REASONING_EFFORT_HIGH),
            "end_user": "user-7",
            "provider_options": options({"anthropic": {"top_k": 5}}),
        },
        route_settings={"end_user": "from_request", **ALLOWED},
        check_request=asks(_anthropic_asks, api_key_header("x-api-key")),
    ),
    dataclasses.replace(
        sample_of("gemini_stream_generate_content_text.txt"),
        chat={
            "response_format": json_schema_format(),
            "generation": effort(pb.REASONING_EFFORT_MEDIUM),
            "provider_options": options({"gemini": {"generationConfig": {"candidateCount": 1}}}),
        },
        route_settings=ALLOWED,
        check_request=asks(_gemini_asks, api_key_header("x-goog-api-key")),
    ),
    dataclasses.replace(
        sample_of("bedrock_converse_stream_text.bin"),
        chat={
            "response_format": json_schema_format(),
            "generation": effort(pb.REASONING_EFFORT_MINIMAL),
        },
        check_request=asks(_bedrock_asks, bedrock_signed),
    ),
    dataclasses.replace(
        sample_of("cohere_v2_chat_stream.txt"),
        chat={"response_format": json_schema_format()},
        check_request=asks(_cohere_asks),
    ),
    dataclasses.replace(
        sample_of("ollama_chat_stream.ndjson"),
        chat={
            "response_format": json_format(pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT),
            "generation": effort(pb.REASONING_EFFORT_LOW),
        },
        check_request=asks(_ollama_asks, ollama_body),
    ),
    dataclasses.replace(
        sample_of("sagemaker_openai_chat_stream.bin"),
        chat={
            "response_format": json_schema_format(),
            "provider_options": options({"sagemaker": {"top_k": 5}}),
        },
        route_settings=ALLOWED,
        check_request=asks(_sagemaker_asks, sagemaker_signed),
    ),
    dataclasses.replace(
        sample_of("mistral_chat_stream.txt"),
        chat={"response_format": json_schema_format()},
        check_request=asks(_mistral_asks),
    ),
]


# Where each provider's api_base points, relative to the fake upstream's root.
API_BASE_SUFFIX = {"openai": "/v1", "databricks": "/serving-endpoints"}


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


def http_parts(sample: Sample) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and body the fake upstream answers with."""
    raw = recording(sample.fixture)
    if not sample.http_response:
        return sample.http_status, {"content-type": sample.content_type}, raw
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().splitlines()
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body


@dataclass
class Received:
    responses: list[pb.ChatResponse | pb.CompleteResponse]
    error: grpc.aio.AioRpcError | None
    embedded: pb.EmbedResponse | None = None


async def call(sample: Sample, target_route: str, stub: Any) -> Received:
    responses: list[Any] = []
    if sample.route_type == "llm/v1/embeddings":
        try:
            embedded = await stub.Embed(pb.EmbedRequest(route=target_route, inputs=["hi"]))
        except grpc.aio.AioRpcError as error:
            return Received([], error)
        return Received([], None, embedded)
    if sample.route_type == "llm/v1/completions":
        stream = stub.Complete(pb.CompleteRequest(route=target_route, prompt="hi"), timeout=10)
    else:
        message = pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="hi")])
        request = pb.ChatRequest(route=target_route, messages=[message], **sample.chat)
        stream = stub.Chat(request, timeout=10)
    try:
        async for response in stream:
            responses.append(response)
    except grpc.aio.AioRpcError as error:
        return Received(responses, error)
    return Received(responses, None)


def usage_of(usage: pb.Usage) -> tuple[int, int, int, int, bool]:
    return (
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_input_tokens,
        usage.reasoning_tokens,
        usage.unreported,
    )


def error_info(error: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return dict(info.metadata)


def check(sample: Sample, received: Received) -> None:
    if received.embedded is not None:
        vectors = [list(e.values) for e in received.embedded.embeddings]
        assert len(vectors) == len(sample.vectors)
        for got, want in zip(vectors, sample.vectors, strict=True):
            assert got == pytest.approx(want, rel=1e-6)  # the proto carries float32
        assert usage_of(received.embedded.usage) == sample.usage
        return
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
        metadata = error_info(received.error)
        assert metadata["provider"] == sample.provider
        assert sample.error_metadata.items() <= metadata.items()
        assert "finish" not in events
        return
    assert received.error is None, received.error
    assert events[0] == "start"
    assert events[-2:] == ["usage", "finish"]
    assert events.count("usage") == events.count("finish") == 1
    assert responses[-1].finish.reason == sample.finish
    assert usage_of(responses[-2].usage) == sample.usage


@pytest.mark.parametrize(
    "sample", SAMPLES + ASKS, ids=lambda s: s.fixture + ("-asks" if s.chat else "")
)
async def test_sample_reaches_the_caller_exactly(sample: Sample) -> None:
    status, headers, body = http_parts(sample)
    for way, reply in replays(body, sample.fixture).items():
        reply.status = status
        reply.headers = headers
        async with FakeUpstream(reply) as upstream:
            model = {
                "provider": sample.provider,
                "name": sample.model,
                "api_base": upstream.base_url + API_BASE_SUFFIX.get(sample.provider, ""),
                **({"api_key": KEY} if sample.api_key else {}),
                **sample.settings,
            }
            config = {
                "routes": [{**route("r", sample.route_type, **model), **sample.route_settings}]
            }
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
