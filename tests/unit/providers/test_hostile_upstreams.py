"""Real adapters against a loopback upstream that misbehaves: bodies of a
gibibyte (streamed by the fake server, never built), events that never end,
oversize eventstream frames, compression that cannot be undone, and streams
that stay open after their terminal event. Each is refused with a precise
UNAVAILABLE reason (or, for the terminal event, answered at once), and the
process's peak RSS grows by a bounded amount."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sluice.config.schema import RouteConfig, TargetConfig
from sluice.domain import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    Event,
    Finish,
    GenerationParams,
    Message,
    Request,
    Role,
    TextPart,
)
from sluice.errors import GatewayError, Status
from sluice.providers.base import Adapter
from sluice.providers.bounds import MAX_ERROR_BODY, BodyBounds
from sluice.providers.http import HttpClientPool
from sluice.routes import build_route
from tests.eventstream import prelude
from tests.recordings import recording
from tests.upstream import FakeUpstream, Reply

GIB = 1024**3
MIB = 1024**2
CHAT = ChatRequest("r", (Message(Role.USER, (TextPart("hi"),)),), GenerationParams())
EMBED = EmbeddingRequest("r", ("hi",))
SSE = {"content-type": "text/event-stream"}


def repeated(piece: bytes, total: int) -> Iterator[bytes]:
    """`total` bytes of `piece` repeated, in chunks of about 1 MiB, made as sent."""
    block = piece * max(MIB // len(piece), 1)
    for _ in range(total // len(block)):
        yield block


@contextlib.contextmanager
def peak_rss_growth() -> Iterator[list[int]]:
    """The growth of this process's peak RSS (bytes) over the block, in the
    list yielded: the kernel's high-water mark is reset first (clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    growth: list[int] = []
    yield growth
    growth.append((_status_kib("VmHWM") - before) * 1024)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


def adapter(
    pool: HttpClientPool, provider: str, base_url: str, bounds: BodyBounds | None = None, **kw: Any
) -> Adapter:
    model = {"provider": provider, "name": "m", "api_base": base_url, "api_key": "k", **kw}
    settings = TargetConfig.model_validate({"model": model}).model
    return settings.create_adapter(pool, bounds=bounds or BodyBounds())


async def outcome(stream: AsyncIterator[Event]) -> tuple[list[Event], GatewayError | None]:
    events: list[Event] = []
    try:
        async for event in stream:
            events.append(event)
    except GatewayError as exc:
        return events, exc
    return events, None


# --- bounds ---------------------------------------------------------------------


async def test_a_1_gib_error_page_is_read_no_further_than_64_kib(pool: HttpClientPool) -> None:
    page = Reply(500, repeated(b"<html>upstream down</html>", GIB), {"content-type": "text/html"})
    async with FakeUpstream(page) as upstream:
        with peak_rss_growth() as growth:
            _, error = await outcome(adapter(pool, "openai", upstream.base_url).stream(CHAT))
        sent = upstream.chunks_sent
    assert error is not None
    assert (error.status, error.reason) == (Status.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")
    assert "<html>upstream down</html>" in error.message
    # The connection was closed after the first 64 KiB: the server stopped
    # writing once the socket buffers were full.
    assert sent * MIB < 64 * MIB
    assert growth[0] < 50 * MIB
    assert MAX_ERROR_BODY == 64 * 1024


async def test_a_1_gib_embeddings_body_is_refused_at_max_response_bytes(
    pool: HttpClientPool,
) -> None:
    body = Reply(200, repeated(b"[0.125, ", GIB), {"content-type": "application/json"})
    async with FakeUpstream(body) as upstream:
        with peak_rss_growth() as growth:
            _, error = await outcome(adapter(pool, "openai", upstream.base_url).stream(EMBED))
        sent = upstream.chunks_sent
    assert error is not None
    assert (error.status, error.reason) == (Status.UNAVAILABLE, "UPSTREAM_RESPONSE_TOO_LARGE")
    assert "max_response_bytes (67108864 bytes)" in error.message
    assert sent * MIB < 128 * MIB
    assert growth[0] < 100 * MIB


async def test_max_response_bytes_is_the_targets_own(pool: HttpClientPool) -> None:
    body = Reply(200, [b'{"data": [' + b" " * 2048 + b"]}"], {"content-type": "application/json"})
    async with FakeUpstream(body) as upstream:
        bounds = BodyBounds(response=1024)
        _, error = await outcome(adapter(pool, "openai", upstream.base_url, bounds).stream(EMBED))
    assert error is not None
    assert error.reason == "UPSTREAM_RESPONSE_TOO_LARGE"


@pytest.mark.parametrize(
    ("provider", "piece", "extra"),
    [
        ("openai", b'data: {"choices": []}\n', {}),  # data lines, never a blank line
        ("anthropic", b"data: " + b"x" * 1000, {}),  # one line that never ends
        ("ollama", b'{"model": "' + b"x" * 1000, {}),
        ("gemini", b"data: {\r\n", {}),
    ],
    ids=["sse-data-lines", "sse-line", "ndjson-line", "gemini-crlf-data-lines"],
)
async def test_an_endless_event_is_refused_at_max_event_bytes(
    pool: HttpClientPool, provider: str, piece: bytes, extra: dict[str, Any]
) -> None:
    async with FakeUpstream(Reply(200, repeated(piece, GIB), SSE)) as upstream:
        with peak_rss_growth() as growth:
            target = adapter(pool, provider, upstream.base_url, **extra)
            _, error = await outcome(target.stream(CHAT))
        sent = upstream.chunks_sent
    assert error is not None
    assert (error.status, error.reason) == (Status.UNAVAILABLE, "UPSTREAM_EVENT_TOO_LARGE")
    assert "max_event_bytes (8388608 bytes)" in error.message
    assert sent * MIB < 64 * MIB
    assert growth[0] < 50 * MIB


async def test_an_oversize_eventstream_frame_is_refused_at_its_prelude(
    pool: HttpClientPool,
) -> None:
    frame = [prelude(GIB, 0), *repeated(b"\0", GIB)]
    body = Reply(200, frame, {"content-type": "application/vnd.amazon.eventstream"})
    async with FakeUpstream(body) as upstream:
        with peak_rss_growth() as growth:
            target = adapter(pool, "bedrock", upstream.base_url, region="us-east-1")
            _, error = await outcome(target.stream(CHAT))
        sent = upstream.chunks_sent
    assert error is not None
    assert (error.status, error.reason) == (Status.UNAVAILABLE, "UPSTREAM_EVENT_TOO_LARGE")
    assert sent < 64
    assert growth[0] < 50 * MIB


# --- decoding ----------------------------------------------------------------------

GZIP_GARBAGE = b"\x1f\x8b\x08" + b"not gzip" * 8


@pytest.mark.parametrize(
    ("status", "encoding", "request_"),
    [
        (200, "gzip", CHAT),
        (200, "gzip", EMBED),
        (200, "deflate", CHAT),
        (500, "gzip", CHAT),
        (429, "gzip", EMBED),
    ],
    ids=["stream", "unary", "deflate", "error-body", "rate-limited-error-body"],
)
async def test_compression_that_cannot_be_undone_is_a_protocol_error(
    pool: HttpClientPool, status: int, encoding: str, request_: Request
) -> None:
    headers = {"content-type": "application/json", "content-encoding": encoding}
    async with FakeUpstream(Reply(status, [GZIP_GARBAGE], headers)) as upstream:
        _, error = await outcome(adapter(pool, "openai", upstream.base_url).stream(request_))
    assert error is not None
    assert (error.status, error.reason) == (Status.UNAVAILABLE, "UPSTREAM_PROTOCOL_ERROR")


@pytest.mark.parametrize(
    "chunk",
    [
        # Valid JSON of shapes no provider documents.
        b'data: {"choices": [{"delta": {"content": 5}}]}\n\ndata: [DONE]\n\n',
        b'data: {"choices": [{"delta": {"tool_calls": [{"function": {"name": 7}}]}}]}\n\n',
        b'data: {"id": 1, "choices": [{"delta": {"content": "a"}}]}\n\n',
        b'data: {"choices": [], "usage": {"prompt_tokens": "many"}}\n\ndata: [DONE]\n\n',
        b"data: [1, 2]\n\n",
    ],
    ids=["number-text", "number-name", "number-id", "string-count", "list-chunk"],
)
async def test_json_of_a_wrong_shape_is_a_protocol_error(
    pool: HttpClientPool, chunk: bytes
) -> None:
    async with FakeUpstream(Reply(200, [chunk], SSE)) as upstream:
        _, error = await outcome(adapter(pool, "openai", upstream.base_url).stream(CHAT))
    assert error is not None
    assert (error.status, error.reason) == (Status.UNAVAILABLE, "UPSTREAM_PROTOCOL_ERROR")


# --- the terminal event ------------------------------------------------------------

TERMINAL = [
    ("openai", "openai_chat_stream.txt", CHAT, {}),
    ("azure_openai", "azure_openai_chat_stream.txt", CHAT, {"api_version": "v1"}),
    ("mistral", "mistral_chat_stream.txt", CHAT, {}),
    ("anthropic", "anthropic_messages_stream.txt", CHAT, {}),
    ("cohere", "cohere_v2_chat_stream.txt", CHAT, {}),
    ("ollama", "ollama_chat_stream.ndjson", CHAT, {}),
    ("tgi", "tgi_generate_stream.txt", CompletionRequest("r", "p"), {}),
    ("bedrock", "bedrock_converse_stream_text.bin", CHAT, {"region": "us-east-1"}),
]


@pytest.mark.parametrize(
    ("provider", "name", "request_", "extra"), TERMINAL, ids=[t[0] for t in TERMINAL]
)
async def test_a_stream_ends_at_its_terminal_event_though_the_upstream_keeps_it_open(
    pool: HttpClientPool, provider: str, name: str, request_: Request, extra: dict[str, Any]
) -> None:
    async with FakeUpstream(Reply(200, [recording(name)], SSE, hang=True)) as upstream:
        started = time.monotonic()
        events, error = await outcome(
            adapter(pool, provider, upstream.base_url, **extra).stream(request_)
        )
        took = time.monotonic() - started
        # Not reusable, the connection is closed: the server sees it go.
        await upstream.connections[0].closed_event.wait()
    assert error is None
    assert isinstance(events[-1], Finish)
    assert took < 1.0  # the fake upstream would hold the body open 30 s


async def test_a_complete_body_after_the_terminal_event_keeps_the_connection(
    pool: HttpClientPool,
) -> None:
    async with FakeUpstream(Reply(200, [recording("openai_chat_stream.txt")], SSE)) as upstream:
        target = adapter(pool, "openai", upstream.base_url)
        for _ in range(3):
            events, error = await outcome(target.stream(CHAT))
            assert error is None
            assert isinstance(events[-1], Finish)
    assert len(upstream.connections) == 1
    assert upstream.connections[0].closed is None


async def test_gemini_has_no_terminal_event_its_stream_ends_with_the_body(
    pool: HttpClientPool,
) -> None:
    """Gemini's SSE sends the finish reason, then perhaps usage, then ends
    the body: the body's end is the stream's, so an open body is waited on."""
    reply = Reply(200, [recording("gemini_stream_generate_content_text.txt")], SSE, hang=True)
    async with FakeUpstream(reply) as upstream:
        stream = adapter(pool, "gemini", upstream.base_url).stream(CHAT)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await outcome(stream)


# --- the keys ---------------------------------------------------------------------


async def test_the_bounds_are_route_keys_a_target_may_override(pool: HttpClientPool) -> None:
    body = Reply(200, [b'{"data": [' + b" " * 4096 + b"]}"], {"content-type": "application/json"})
    async with FakeUpstream(body) as upstream:
        model = {"provider": "openai", "name": "m", "api_base": upstream.base_url, "api_key": "k"}
        route = RouteConfig.model_validate(
            {
                "name": "r",
                "route_type": "llm/v1/embeddings",
                "max_response_bytes": 2048,
                "targets": [{"model": model}, {"model": model, "max_response_bytes": 1 << 20}],
            }
        )
        inherited, overridden = build_route(route, pool).targets
        _, error = await outcome(inherited.adapter.stream(EMBED))
        _, other = await outcome(overridden.adapter.stream(EMBED))
    assert error is not None
    assert error.reason == "UPSTREAM_RESPONSE_TOO_LARGE"
    assert "max_response_bytes (2048 bytes)" in error.message
    assert other is None  # read whole under its own bound: an (empty) answer


@pytest.mark.parametrize("key", ["max_response_bytes", "max_event_bytes"])
@pytest.mark.parametrize("value", [0, 1023, 2**30 + 1])
def test_a_bound_out_of_range_is_refused_by_the_config(key: str, value: int) -> None:
    route = {"name": "r", "route_type": "llm/v1/chat", "model": {"provider": "mock"}, key: value}
    with pytest.raises(ValidationError, match=key):
        RouteConfig.model_validate(route)
