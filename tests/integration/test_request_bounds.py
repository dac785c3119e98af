"""Hostile and careless requests against a running gateway, over a real
channel: each is refused with the status it deserves, before any work, and
the gateway keeps serving (issue 11: failures 1, 5 and the request parts of 8)."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from sluice.api import decoding
from sluice.log_throttle import ThrottledLog
from sluice_client.v1 import gateway_pb2 as pb
from tests.gateway import RunningGateway, route, running_gateway
from tests.telemetry import Recorded
from tests.wire import deep_tool_schema

CONFIG: dict[str, Any] = {
    "routes": [
        route("chat", provider="mock"),
        route("complete", "llm/v1/completions", provider="mock"),
        route("embed", "llm/v1/embeddings", provider="mock"),
    ]
}
SERVICE = "/sluice.v1.GatewayService"


def hello() -> pb.ChatRequest:
    return pb.ChatRequest(
        route="chat", messages=[pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="hi")])]
    )


def details(error: grpc.aio.AioRpcError) -> tuple[error_details_pb2.ErrorInfo, str]:
    """The ErrorInfo and the BadRequest field ("" without one) of a refusal."""
    status = rpc_status.from_call(error)
    assert status is not None
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    field = ""
    for detail in status.details:
        if detail.Unpack(bad):
            field = bad.field_violations[0].field
        detail.Unpack(info)
    return info, field


async def still_serves(gateway: RunningGateway) -> None:
    replies = [reply async for reply in gateway.stub.Chat(hello(), timeout=5)]
    assert replies[-1].HasField("finish")


async def raw_call(gateway: RunningGateway, method: str, data: bytes) -> grpc.StatusCode:
    """Send `data` as the request bytes of `method`; the status it ends with."""
    path = f"{SERVICE}/{method}"
    try:
        if method in ("Chat", "Complete"):
            stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes]
            stream = gateway.channel.unary_stream(path)  # no serializers: bytes in, bytes out
            async for _ in stream(data, timeout=5):
                pass
        else:
            unary: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]
            unary = gateway.channel.unary_unary(path)
            await unary(data, timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_embed_with_huge_dimensions_on_a_mock_route_is_refused_at_once() -> None:
    """`dimensions: 2147483647` made the mock allocate until the OOM killer came."""
    async with running_gateway(CONFIG) as gateway:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gateway.stub.Embed(
                pb.EmbedRequest(route="embed", inputs=["a"], dimensions=2_147_483_647), timeout=5
            )
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert details(caught.value)[1] == "dimensions"
        assert "65536" in (caught.value.details() or "")
        await still_serves(gateway)


async def test_nan_temperature_on_a_mock_route_is_invalid_argument() -> None:
    request = hello()
    request.generation.temperature = float("nan")
    async with running_gateway(CONFIG) as gateway:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in gateway.stub.Chat(request, timeout=5):
                pass
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert details(caught.value)[1] == "generation.temperature"


@pytest.mark.parametrize(
    ("method", "data"),
    [
        ("Chat", b"\x0a\xff\xff\xff\xff\x0f"),
        ("Complete", b"\x12\x02\xff\xfe"),
        ("Embed", b"\x0a\x01"),
        ("ListRoutes", b"\xff"),
        ("Chat", deep_tool_schema(200)),
    ],
    ids=["chat-corrupt", "complete-bad-utf8", "embed-truncated", "list-routes-corrupt", "deep"],
)
async def test_malformed_bytes_are_invalid_argument_logged_once_without_a_traceback(
    method: str, data: bytes, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decoding, "_malformed_log", ThrottledLog(decoding.logger))
    async with running_gateway(CONFIG) as gateway:
        with caplog.at_level(logging.WARNING):
            codes = [await raw_call(gateway, method, data) for _ in range(5)]
        assert codes == [grpc.StatusCode.INVALID_ARGUMENT] * 5
        await still_serves(gateway)
    refused = [r for r in caplog.records if r.name == "sluice.api.decoding"]
    assert len(refused) == 1
    assert "malformed" in refused[0].getMessage()
    assert all(record.exc_info is None for record in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_10kb_route_name_is_not_found_with_small_trailers() -> None:
    """Echoed whole, twice, it pushed the trailers past the client's metadata
    limit, and the caller saw RESOURCE_EXHAUSTED."""
    request = hello()
    request.route = "r" * 10_000
    async with running_gateway(CONFIG) as gateway:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in gateway.stub.Chat(request, timeout=5):
                pass
    error = caught.value
    assert error.code() is grpc.StatusCode.NOT_FOUND
    info, _ = details(error)
    assert info.reason == "ROUTE_NOT_FOUND"
    assert info.metadata["route"].endswith("…")
    assert len(info.metadata["route"]) < 200
    assert len(error.details() or "") < 300


async def test_an_image_to_a_route_that_takes_none_is_invalid_argument() -> None:
    """The mock answered as if the image were not there."""
    request = hello()
    request.messages[0].parts.add(image=pb.Image(url="https://example.com/cat.png"))
    async with running_gateway(CONFIG) as gateway:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in gateway.stub.Chat(request, timeout=5):
                pass
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[1] == "messages[0].parts[1].image"
    assert "takes no images" in (caught.value.details() or "")


async def test_an_embed_reply_over_the_send_limit_is_refused_and_logged_as_refused() -> None:
    """A reply the caller's receive limit refuses was logged (and billed) as OK:
    the server never learns of that refusal, so it refuses first."""
    recorded = Recorded()
    config = {**CONFIG, "server": {"max_send_message_bytes": 64 * 1024}}
    async with running_gateway(config, telemetry=recorded.telemetry) as gateway:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gateway.stub.Embed(
                pb.EmbedRequest(route="embed", inputs=["a", "b", "c"], dimensions=8192), timeout=5
            )
        small = await gateway.stub.Embed(
            pb.EmbedRequest(route="embed", inputs=["a"], dimensions=8), timeout=5
        )
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details(caught.value)[0].reason == "RESPONSE_TOO_LARGE"
    assert len(small.embeddings[0].values) == 8
    statuses = [(line["method"], line["status"], line["reason"]) for line in recorded.log_lines()]
    assert statuses == [
        ("Embed", "RESOURCE_EXHAUSTED", "RESPONSE_TOO_LARGE"),
        ("Embed", "OK", None),
    ]


async def test_request_limits_come_from_the_config() -> None:
    config = {**CONFIG, "server": {"request_limits": {"max_inputs": 2}}}
    async with running_gateway(config) as gateway:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gateway.stub.Embed(pb.EmbedRequest(route="embed", inputs=["a"] * 3), timeout=5)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "server.request_limits.max_inputs" in (caught.value.details() or "")
        await gateway.stub.Embed(pb.EmbedRequest(route="embed", inputs=["a"] * 2), timeout=5)
