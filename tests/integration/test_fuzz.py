"""Fuzzing a running gateway (issue 11's proof): hypothesis draws every
request message, valid, at the bounds and hostile, and hand-built invalid
wire bytes, and sends them over a real channel to a gateway on loopback,
with mock routes and routes to a loopback OpenAI upstream.

The property: every call ends OK or with a documented status carrying
ErrorInfo (never UNKNOWN or INTERNAL), the process's RSS stays under a
bound, and a plain call still works afterwards. The gateway runs on its own
event loop in a thread, so that hypothesis drives a plain blocking client;
its request limits are small, so the examples reach every bound cheaply.
Bounded for CI: a fixed number of examples per RPC, the whole file in well
under a minute.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.app import GatewayServer
from sluice.config.loader import parse_config
from sluice_client.v1 import gateway_pb2 as pb
from sluice_client.v1 import gateway_pb2_grpc
from tests.recordings import recording
from tests.upstream import FakeUpstream, Reply, SeenRequest
from tests.wire import deep_tool_schema

# The statuses the README documents for a caller's request (never UNKNOWN, INTERNAL).
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
# Growth of this process's resident memory over the whole file.
RSS_GROWTH_BOUND = 256 * 1024 * 1024
FUZZ = settings(
    max_examples=150,
    deadline=timedelta(seconds=5),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIMITS = {
    "max_messages": 8,
    "max_parts": 4,
    "max_text_chars": 2048,
    "max_image_bytes": 256,
    "max_tools": 3,
    "max_tool_bytes": 1024,
    "max_stop_sequences": 3,
    "max_inputs": 6,
    "max_embedding_values": 4096,
    "max_labels": 3,
    "max_label_chars": 16,
}
CHAT_ROUTES = ["mock-chat", "upstream-chat"]
EMBED_ROUTES = ["mock-embed", "upstream-embed"]
ROUTES = [*CHAT_ROUTES, "mock-complete", *EMBED_ROUTES]


def resident_bytes() -> int:
    fields = Path("/proc/self/statm").read_text().split()
    return int(fields[1]) * 4096


def openai_upstream(request: SeenRequest) -> Reply:
    """Chat: a recorded stream; embeddings: one vector per input."""
    if request.path.endswith("/embeddings"):
        body = request.json()
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        size = body.get("dimensions", 4)
        data = [
            {"object": "embedding", "index": i, "embedding": [0.5] * size}
            for i in range(len(inputs))
        ]
        return Reply.json(
            200,
            {
                "object": "list",
                "data": data,
                "model": "text-embedding-3-small",
                "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)},
            },
        )
    return Reply(chunks=[recording("openai_chat_stream.txt")])


def config(base_url: str) -> dict[str, Any]:
    upstream = {"provider": "openai", "api_base": f"{base_url}/v1", "api_key": "sk-fuzz"}
    return {
        "server": {"request_limits": LIMITS, "max_send_message_bytes": 64 * 1024},
        "telemetry": {"access_log": {"enabled": False}},
        "routes": [
            {"name": "mock-chat", "route_type": "llm/v1/chat", "model": {"provider": "mock"}},
            {
                "name": "upstream-chat",
                "route_type": "llm/v1/chat",
                "model": {**upstream, "name": "gpt-4o-2024-08-06"},
            },
            {
                "name": "mock-complete",
                "route_type": "llm/v1/completions",
                "model": {"provider": "mock"},
            },
            {
                "name": "mock-embed",
                "route_type": "llm/v1/embeddings",
                "model": {"provider": "mock"},
            },
            {
                "name": "upstream-embed",
                "route_type": "llm/v1/embeddings",
                "model": {**upstream, "name": "text-embedding-3-small"},
            },
        ],
    }


@dataclass
class Fuzzed:
    stub: gateway_pb2_grpc.GatewayServiceStub
    channel: grpc.Channel
    rss_before: int


class BackgroundLoop:
    """An event loop in a thread, running what the tests submit."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout=30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[Fuzzed]:
    background = BackgroundLoop()
    upstream = FakeUpstream(openai_upstream)
    background.run(upstream.__aenter__())

    async def start() -> GatewayServer:
        text = yaml.safe_dump(config(upstream.base_url))
        server = GatewayServer(parse_config(text, "<fuzz config>", {}), ["127.0.0.1:0"])
        await server.start()
        return server

    server: GatewayServer = background.run(start())
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    fuzzed = Fuzzed(gateway_pb2_grpc.GatewayServiceStub(channel), channel, resident_bytes())
    try:
        yield fuzzed
        assert_still_serves(fuzzed)
    finally:
        channel.close()
        background.run(server.stop(0))
        background.run(upstream.__aexit__(None, None, None))
        background.close()


def outcome(fuzzed: Fuzzed, call: Callable[[], object]) -> grpc.StatusCode:
    """The status `call` ends with: a documented one, a refusal with
    ErrorInfo, and the process's memory still within its bound."""
    failure: grpc.RpcError | None = None
    try:
        call()
    except grpc.RpcError as error:
        failure = error
    assert resident_bytes() - fuzzed.rss_before < RSS_GROWTH_BOUND
    if failure is None:
        return grpc.StatusCode.OK
    assert isinstance(failure, grpc.Call)
    code = failure.code()
    assert code in DOCUMENTED, f"{code}: {failure.details()}"
    status = rpc_status.from_call(failure)
    assert status is not None, f"{code} without details: {failure.details()}"
    assert status.details[0].Unpack(error_details_pb2.ErrorInfo())
    assert len(failure.details() or "") < 2048
    return code


def out_of_range(generation: pb.GenerationConfig) -> bool:
    """A sampling value no route may pass on (NaN reached the adapters)."""
    return any(
        generation.HasField(name) and not math.isfinite(getattr(generation, name))
        for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty")
    )


def assert_still_serves(fuzzed: Fuzzed) -> None:
    hello = pb.ChatRequest(
        route="mock-chat", messages=[pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="hi")])]
    )
    replies = list(fuzzed.stub.Chat(hello, timeout=5))
    assert replies[-1].HasField("finish")
    assert resident_bytes() - fuzzed.rss_before < RSS_GROWTH_BOUND


# --- strategies --------------------------------------------------------------------

INT32 = st.integers(-(2**31), 2**31 - 1)
# Around the bounds, and far past them.
COUNTS = st.one_of(st.integers(0, 10), st.sampled_from([0, 1, 2**15, 2**31 - 1, -1, -(2**31)]))
FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, 2.0, 2.0000001, -2.0, float("nan"), float("inf")]),
)
TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "x" * 2048, "x" * 2049, "é" * 300, "\x00", "{}", "[]"]),
)
NAMES = st.one_of(st.text(max_size=12), st.sampled_from(["", "f", "n" * 256, "n" * 257]))
ROUTE_NAMES = st.one_of(st.sampled_from(ROUTES), st.text(max_size=20), st.just("r" * 10_000))
LABELS = st.dictionaries(st.text(max_size=20), st.text(max_size=20), max_size=5)


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    leaves = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), st.text(max_size=10))
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=3),
            st.dictionaries(st.text(max_size=5), children, max_size=3),
        ),
        max_leaves=max_leaves,
    )


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


SCHEMAS = st.one_of(
    st.dictionaries(st.text(max_size=8), json_values(), max_size=4),
    st.sampled_from([nested(31), nested(32), nested(33), {"d": "x" * 2000}]),
)
ARGUMENTS = st.one_of(
    TEXT,
    json_values().map(json.dumps),
    st.sampled_from([json.dumps(nested(40)), "[" * 5000 + "]" * 5000, '{"a": NaN}']),
)


@st.composite
def parts(draw: st.DrawFn) -> pb.Part:
    kind = draw(st.sampled_from(["text", "image", "tool_call", "tool_result", "empty"]))
    if kind == "text":
        return pb.Part(text=draw(TEXT))
    if kind == "image":
        source = draw(st.sampled_from(["data", "url"]))
        image = pb.Image(media_type=draw(NAMES))
        if source == "data":
            image.data = draw(st.binary(max_size=300))
        else:
            image.url = draw(st.one_of(st.text(max_size=30), st.just("https://x/" + "a" * 300)))
        return pb.Part(image=image)
    if kind == "tool_call":
        call = pb.ToolCall(id=draw(NAMES), name=draw(NAMES), arguments=draw(ARGUMENTS))
        return pb.Part(tool_call=call)
    if kind == "tool_result":
        result = pb.ToolResult(
            tool_call_id=draw(NAMES), content=draw(TEXT), is_error=draw(st.booleans())
        )
        return pb.Part(tool_result=result)
    return pb.Part()


ROLES = st.sampled_from([0, pb.ROLE_SYSTEM, pb.ROLE_USER, pb.ROLE_ASSISTANT, pb.ROLE_TOOL, 99])
MESSAGES = st.builds(
    pb.Message,
    role=ROLES,
    parts=st.lists(parts(), max_size=6),
    name=st.one_of(st.just(""), NAMES),
)


# Messages any route accepts, so that a request's other fields decide its fate.
PLAUSIBLE_MESSAGES = st.builds(
    pb.Message,
    role=st.sampled_from([pb.ROLE_SYSTEM, pb.ROLE_USER, pb.ROLE_ASSISTANT]),
    parts=st.lists(st.builds(pb.Part, text=st.text(max_size=40)), min_size=1, max_size=3),
)


@st.composite
def generation(draw: st.DrawFn) -> pb.GenerationConfig:
    config = pb.GenerationConfig(stop=draw(st.lists(TEXT, max_size=5)))
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        if draw(st.booleans()):
            setattr(config, name, draw(FLOATS))
    for name in ("max_tokens", "top_k", "reasoning_budget_tokens"):
        if draw(st.booleans()):
            setattr(config, name, draw(st.one_of(COUNTS, INT32)))
    if draw(st.booleans()):
        config.seed = draw(st.integers(-(2**63), 2**63 - 1))
    return config


@st.composite
def tools(draw: st.DrawFn) -> pb.Tool:
    parameters = struct_pb2.Struct()
    parameters.update(draw(SCHEMAS))
    return pb.Tool(name=draw(NAMES), description=draw(TEXT), parameters=parameters)


@st.composite
def cache_controls(draw: st.DrawFn) -> pb.CacheControl:
    control = pb.CacheControl(bypass=draw(st.booleans()), no_store=draw(st.booleans()))
    if draw(st.booleans()):
        control.ttl = draw(st.one_of(COUNTS, INT32))
    return control


@st.composite
def chat_requests(draw: st.DrawFn) -> pb.ChatRequest:
    """Half plausible (routes and messages a gateway accepts), half anything."""
    if draw(st.booleans()):
        return pb.ChatRequest(
            route=draw(st.sampled_from(CHAT_ROUTES)),
            messages=draw(st.lists(PLAUSIBLE_MESSAGES, min_size=1, max_size=4)),
            generation=draw(generation()),
            labels=draw(LABELS),
        )
    request = pb.ChatRequest(
        route=draw(st.one_of(st.sampled_from(CHAT_ROUTES), ROUTE_NAMES)),
        messages=draw(st.lists(MESSAGES, max_size=10)),
        generation=draw(generation()),
        tools=draw(st.lists(tools(), max_size=4)),
        labels=draw(LABELS),
        cache=draw(cache_controls()),
    )
    choice = draw(st.sampled_from(["none", "mode", "name"]))
    if choice == "mode":
        mode = draw(st.sampled_from([0, 1, 2, 3, 42]))
        request.tool_choice.mode = pb.ToolChoiceMode.ValueType(mode)
    elif choice == "name":
        request.tool_choice.tool_name = draw(NAMES)
    return request


COMPLETE_REQUESTS = st.builds(
    pb.CompleteRequest,
    route=st.one_of(st.just("mock-complete"), ROUTE_NAMES),
    prompt=TEXT,
    generation=generation(),
    labels=LABELS,
    suffix=TEXT,
    cache=cache_controls(),
)


@st.composite
def embed_requests(draw: st.DrawFn) -> pb.EmbedRequest:
    request = pb.EmbedRequest(
        route=draw(st.one_of(st.sampled_from(EMBED_ROUTES), ROUTE_NAMES)),
        inputs=draw(st.lists(TEXT, max_size=8)),
        labels=draw(LABELS),
    )
    if draw(st.booleans()):
        request.dimensions = draw(
            st.one_of(
                st.integers(-2, 2048),
                st.sampled_from([65_536, 65_537, 2**31 - 1, -(2**31)]),
            )
        )
    return request


def mutated(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """A valid message's bytes with bytes flipped, cut or appended."""

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(valid).SerializeToString())
        for _ in range(draw(st.integers(1, 4))):
            action = draw(st.sampled_from(["flip", "cut", "append"]))
            if action == "flip" and data:
                data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
            elif action == "cut" and data:
                del data[draw(st.integers(0, len(data) - 1)) :]
            else:
                data += draw(st.binary(min_size=1, max_size=16))
        return bytes(data)

    return mutate()


HOSTILE_BYTES = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [
            b"\x0a\xff\xff\xff\xff\x0f",  # a length past the end
            b"\x0a\x02\xff\xfe",  # bad UTF-8 in a string
            deep_tool_schema(40),  # past protobuf's recursion limit
            deep_tool_schema(33),  # just within it, past the gateway's
            b"\x22\xff\xff\xff\xff\x07",  # a 2 GiB length
            b"\x0f",  # field 1 with the deprecated end-group wire type
        ]
    ),
)


# --- the properties -----------------------------------------------------------------


@FUZZ
@given(request=chat_requests())
def test_chat(fuzzed: Fuzzed, request: pb.ChatRequest) -> None:
    code = outcome(fuzzed, lambda: list(fuzzed.stub.Chat(request, timeout=10)))
    if out_of_range(request.generation):
        assert code is grpc.StatusCode.INVALID_ARGUMENT


@FUZZ
@given(request=COMPLETE_REQUESTS)
def test_complete(fuzzed: Fuzzed, request: pb.CompleteRequest) -> None:
    code = outcome(fuzzed, lambda: list(fuzzed.stub.Complete(request, timeout=10)))
    if out_of_range(request.generation):
        assert code is grpc.StatusCode.INVALID_ARGUMENT


@FUZZ
@given(request=embed_requests())
def test_embed(fuzzed: Fuzzed, request: pb.EmbedRequest) -> None:
    code = outcome(fuzzed, lambda: fuzzed.stub.Embed(request, timeout=10))
    if request.HasField("dimensions") and not 0 < request.dimensions <= 65_536:
        assert code is grpc.StatusCode.INVALID_ARGUMENT


@FUZZ
@given(
    method=st.sampled_from(["Chat", "Complete", "Embed", "ListRoutes"]),
    data=st.one_of(
        HOSTILE_BYTES,
        mutated(chat_requests()),
        mutated(COMPLETE_REQUESTS),
        mutated(embed_requests()),
    ),
)
def test_invalid_wire_bytes(fuzzed: Fuzzed, method: str, data: bytes) -> None:
    path = f"/sluice.v1.GatewayService/{method}"
    if method in ("Chat", "Complete"):
        stream: grpc.UnaryStreamMultiCallable[bytes, bytes]
        stream = fuzzed.channel.unary_stream(path)  # no serializers: bytes in, bytes out
        outcome(fuzzed, lambda: list(stream(data, timeout=10)))
    else:
        unary: grpc.UnaryUnaryMultiCallable[bytes, bytes]
        unary = fuzzed.channel.unary_unary(path)
        outcome(fuzzed, lambda: unary(data, timeout=10))


def test_list_routes_and_a_plain_call_still_work(fuzzed: Fuzzed) -> None:
    routes = fuzzed.stub.ListRoutes(pb.ListRoutesRequest(), timeout=5)
    assert [route.name for route in routes.routes] == ROUTES
    assert_still_serves(fuzzed)
