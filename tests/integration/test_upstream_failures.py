"""Upstream failures reach the caller as the right gRPC status with
google.rpc details, before and after the first chunk."""

from __future__ import annotations

import socket
import time
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from sluice_client.v1 import gateway_pb2 as pb
from tests.gateway import RunningGateway, route, running_gateway
from tests.recordings import recording
from tests.upstream import FakeUpstream, Reply

REQUEST = pb.ChatRequest(
    route="up", messages=[pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="hi")])]
)
SECRET_KEY = "sk-integration-secret-do-not-leak"


def config(base_url: str, provider: str = "openai") -> dict[str, Any]:
    return {
        "routes": [
            route("up", provider=provider, name="m", api_base=base_url, api_key="{{ secrets.K }}")
        ]
    }


async def call_and_fail(
    gateway: RunningGateway,
) -> tuple[list[pb.ChatResponse], grpc.aio.AioRpcError]:
    received: list[pb.ChatResponse] = []
    try:
        async for response in gateway.stub.Chat(REQUEST, timeout=10):
            received.append(response)
    except grpc.aio.AioRpcError as error:
        return received, error
    raise AssertionError("the call succeeded")


def details(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    """The google.rpc details of an error, by type name."""
    status = rpc_status.from_call(error)
    assert status is not None, "every error carries google.rpc details"
    found: dict[str, Any] = {}
    for detail in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.RetryInfo,
            error_details_pb2.BadRequest,
        ):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found[kind.DESCRIPTOR.name] = message
    return found


@pytest.mark.parametrize(
    ("reply", "code", "reason", "message_part"),
    [
        (
            Reply.json(500, {"error": {"message": "boom", "type": "server_error"}}),
            grpc.StatusCode.UNAVAILABLE,
            "UPSTREAM_UNAVAILABLE",
            "openai: boom",
        ),
        (
            Reply.json(
                400,
                {"error": {"message": "bad messages", "type": "invalid_request_error"}},
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "UPSTREAM_BAD_REQUEST",
            "openai: bad messages",
        ),
        (
            Reply.json(
                401,
                {"error": {"message": f"Incorrect API key provided: {SECRET_KEY}"}},
            ),
            grpc.StatusCode.INTERNAL,
            "UPSTREAM_AUTH_FAILED",
            "openai rejected the gateway's credentials (HTTP 401)",
        ),
        (
            Reply.json(404, {"error": {"message": "model m does not exist"}}),
            grpc.StatusCode.FAILED_PRECONDITION,
            "UPSTREAM_NOT_FOUND",
            "model m does not exist",
        ),
    ],
)
async def test_http_errors_before_the_stream(
    reply: Reply, code: grpc.StatusCode, reason: str, message_part: str
) -> None:
    reply.headers["x-request-id"] = "req_123"
    async with (
        FakeUpstream(reply) as upstream,
        running_gateway(config(upstream.base_url), {"K": SECRET_KEY}) as gateway,
    ):
        received, error = await call_and_fail(gateway)
    assert received == []
    assert error.code() == code
    assert message_part in (error.details() or "")
    info = details(error)["ErrorInfo"]
    assert (info.reason, info.domain) == (reason, "sluice.v1")
    assert info.metadata["provider"] == "openai"
    assert info.metadata["upstream_request_id"] == "req_123"
    assert SECRET_KEY not in str(error.debug_error_string()) + str(error.details())


async def test_rate_limit_carries_retry_info() -> None:
    reply = Reply.json(
        429,
        {"error": {"message": "Rate limit reached", "type": "rate_limit_error"}},
        {"retry-after": "7"},
    )
    async with (
        FakeUpstream(reply) as upstream,
        running_gateway(config(upstream.base_url), {"K": SECRET_KEY}) as gateway,
    ):
        _, error = await call_and_fail(gateway)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    found = details(error)
    assert found["ErrorInfo"].reason == "UPSTREAM_RATE_LIMITED"
    assert found["RetryInfo"].retry_delay.seconds == 7


async def test_unreachable_upstream_is_unavailable() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with running_gateway(config(f"http://127.0.0.1:{port}"), {"K": SECRET_KEY}) as gateway:
        _, error = await call_and_fail(gateway)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert details(error)["ErrorInfo"].reason == "UPSTREAM_UNAVAILABLE"
    assert "connection failed" in (error.details() or "")


@pytest.mark.parametrize(
    ("name", "provider", "code", "text"),
    [
        ("openai_chat_error_midstream.txt", "openai", grpc.StatusCode.UNAVAILABLE, "I'm"),
        ("anthropic_error_midstream.txt", "anthropic", grpc.StatusCode.UNAVAILABLE, "Hello"),
    ],
)
async def test_error_after_first_chunk_ends_the_stream_with_its_status(
    name: str, provider: str, code: grpc.StatusCode, text: str
) -> None:
    async with (
        FakeUpstream(Reply(chunks=[recording(name)])) as upstream,
        running_gateway(config(upstream.base_url, provider), {"K": SECRET_KEY}) as gateway,
    ):
        received, error = await call_and_fail(gateway)
    assert received[0].HasField("start")
    assert "".join(r.delta.text for r in received) == text
    assert not any(r.HasField("finish") for r in received), "never a clean end"
    assert error.code() == code
    assert details(error)["ErrorInfo"].metadata["provider"] == provider


async def test_error_in_the_same_chunk_as_text_is_raised_without_waiting() -> None:
    """The delta and the error arrive together, then the upstream stalls:
    the caller gets both at once, not after the stall."""
    body = recording("openai_chat_error_midstream.txt")
    stall_after_error = Reply(chunks=[body, b": keep-alive\n\n"], delays=[0, 30])
    async with (
        FakeUpstream(stall_after_error) as upstream,
        running_gateway(config(upstream.base_url), {"K": SECRET_KEY}) as gateway,
    ):
        started = time.monotonic()
        received, error = await call_and_fail(gateway)
    assert time.monotonic() - started < 2
    assert "".join(r.delta.text for r in received) == "I'm"
    assert error.code() == grpc.StatusCode.UNAVAILABLE


async def test_truncated_stream_is_unavailable_not_a_clean_end() -> None:
    body = recording("openai_chat_stream.txt")
    cut = body[: body.index(b"data: [DONE]") - 300]
    async with (
        FakeUpstream(Reply(chunks=[cut])) as upstream,
        running_gateway(config(upstream.base_url), {"K": SECRET_KEY}) as gateway,
    ):
        received, error = await call_and_fail(gateway)
    assert received
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert details(error)["ErrorInfo"].reason == "UPSTREAM_PROTOCOL_ERROR"


async def test_gateway_keeps_serving_after_failures() -> None:
    replies = iter(
        [
            Reply.json(500, {"error": {"message": "x"}}),
            Reply(chunks=[recording("openai_chat_stream.txt")]),
        ]
    )
    async with (
        FakeUpstream(lambda _request: next(replies)) as upstream,
        running_gateway(config(upstream.base_url), {"K": SECRET_KEY}) as gateway,
    ):
        await call_and_fail(gateway)
        responses = [r async for r in gateway.stub.Chat(REQUEST, timeout=10)]
    assert responses[-1].finish.reason == pb.FINISH_REASON_STOP
