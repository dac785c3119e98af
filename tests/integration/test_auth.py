"""API-key auth through a real server: who may call what, what stays open,
and a scan proving no key reaches a log line, an error or its details."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from sluice.auth import hash_key
from sluice.redaction import RedactingFormatter
from sluice_client.v1 import gateway_pb2 as pb
from tests.gateway import RunningGateway, route, running_gateway
from tests.upstream import FakeUpstream, Reply, SeenRequest

ALICE_KEY = "sk-sluice-alice-Zq8vN3kLw2"
BOB_KEY = "sk-sluice-bob-Hc5tR9mXp1"
UPSTREAM_KEY = "sk-upstream-Yb7uE4jSd6"
ROUTES = [
    route("chat", provider="mock", reply="hi there"),
    route("embed", "llm/v1/embeddings", provider="mock"),
    route("secret", provider="mock"),
]
KEYS = {
    "keys": [
        {"name": "alice", "sha256": hash_key(ALICE_KEY), "routes": ["chat", "embed"]},
        {"name": "bob", "sha256": hash_key(BOB_KEY)},
    ]
}
CONFIG = {"auth": KEYS, "routes": ROUTES}


def chat(route_name: str, text: str = "hi") -> pb.ChatRequest:
    return pb.ChatRequest(
        route=route_name, messages=[pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text=text)])]
    )


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


async def chat_text(gateway: RunningGateway, request: pb.ChatRequest, key: str) -> str:
    stream = gateway.stub.Chat(request, metadata=bearer(key), timeout=10)
    return "".join([response.delta.text async for response in stream])


@pytest.fixture
async def gateway() -> AsyncIterator[RunningGateway]:
    async with running_gateway(CONFIG) as running:
        yield running


@pytest.mark.parametrize(
    ("metadata", "reason", "message"),
    [
        ((), "MISSING_API_KEY", "this gateway needs an API key: send `authorization: Bearer <key>`"),
        ((("authorization", ALICE_KEY),), "MALFORMED_AUTHORIZATION", "the authorization metadata must be `Bearer <key>`"),
        (bearer(ALICE_KEY + "x"), "INVALID_API_KEY", "the API key is not valid"),
        (bearer(hash_key(ALICE_KEY)), "INVALID_API_KEY", "the API key is not valid"),
    ],
)  # fmt: skip
async def test_no_valid_key_is_unauthenticated_on_every_rpc(
    gateway: RunningGateway, metadata: tuple[tuple[str, str], ...], reason: str, message: str
) -> None:
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: gateway.stub.Chat(chat("chat"), metadata=metadata, timeout=10).read(),
        lambda: gateway.stub.Complete(
            pb.CompleteRequest(route="chat", prompt="x"), metadata=metadata, timeout=10
        ).read(),
        lambda: gateway.stub.Embed(
            pb.EmbedRequest(route="embed", inputs=["x"]), metadata=metadata, timeout=10
        ),
        lambda: gateway.stub.ListRoutes(pb.ListRoutesRequest(), metadata=metadata, timeout=10),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call()
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert caught.value.details() == message
        assert error_info(caught.value).reason == reason


async def test_a_key_streams_on_its_routes(gateway: RunningGateway) -> None:
    assert await chat_text(gateway, chat("chat"), ALICE_KEY) == "hi there"
    assert await chat_text(gateway, chat("secret"), BOB_KEY) != ""
    reply = await gateway.stub.Embed(
        pb.EmbedRequest(route="embed", inputs=["x"]), metadata=bearer(ALICE_KEY), timeout=10
    )
    assert len(reply.embeddings) == 1


@pytest.mark.parametrize(
    ("key", "route_name", "code", "reason"),
    [
        (ALICE_KEY, "secret", grpc.StatusCode.PERMISSION_DENIED, "ROUTE_NOT_ALLOWED"),
        # A limited key cannot tell a missing route from a forbidden one...
        (ALICE_KEY, "missing", grpc.StatusCode.PERMISSION_DENIED, "ROUTE_NOT_ALLOWED"),
        # ...a key allowed every route can.
        (BOB_KEY, "missing", grpc.StatusCode.NOT_FOUND, "ROUTE_NOT_FOUND"),
    ],
)
async def test_a_route_outside_the_key_list_is_permission_denied(
    gateway: RunningGateway, key: str, route_name: str, code: grpc.StatusCode, reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chat_text(gateway, chat(route_name), key)
    assert caught.value.code() == code
    info = error_info(caught.value)
    assert (info.reason, info.metadata["route"]) == (reason, route_name)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        assert caught.value.details() == f"key 'alice' may not use route {route_name!r}"
        assert info.metadata["key"] == "alice"


@pytest.mark.parametrize(
    ("metadata", "names"),
    [(bearer(ALICE_KEY), ["chat", "embed"]), (bearer(BOB_KEY), ["chat", "embed", "secret"])],
)
async def test_list_routes_shows_only_the_key_routes(
    gateway: RunningGateway, metadata: tuple[tuple[str, str], ...], names: list[str]
) -> None:
    listed = await gateway.stub.ListRoutes(pb.ListRoutesRequest(), metadata=metadata, timeout=10)
    assert [r.name for r in listed.routes] == names


async def test_list_routes_shows_every_route_when_auth_is_off() -> None:
    async with running_gateway({"routes": ROUTES}) as gateway:
        listed = await gateway.stub.ListRoutes(pb.ListRoutesRequest(), timeout=10)
        assert await chat_text(gateway, chat("secret"), "anything") != ""
    assert [r.name for r in listed.routes] == ["chat", "embed", "secret"]


async def test_health_and_reflection_need_no_key(gateway: RunningGateway) -> None:
    health = health_pb2_grpc.HealthStub(gateway.channel)
    checked = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert checked.status == health_pb2.HealthCheckResponse.SERVING

    reflection = reflection_pb2_grpc.ServerReflectionStub(gateway.channel)
    stream = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
    )
    replies = [reply async for reply in stream]
    assert {s.name for s in replies[0].list_services_response.service} == {
        "sluice.v1.GatewayService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }


# The secret scan.


def upstream_echoing_its_key(request: SeenRequest) -> Reply:
    """An upstream that quotes the credentials it was sent, as some do."""
    status = int(request.json()["messages"][-1]["content"])
    message = f"bad credentials: {request.headers.get('authorization')}"
    return Reply.json(status, {"error": {"message": message, "type": "invalid_request_error"}})


@contextmanager
def all_logs() -> Iterator[io.StringIO]:
    """Every log record, at DEBUG, formatted as the server formats them."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def everything_seen(call: Any) -> tuple[grpc.StatusCode, str]:
    """The call's code, and all a client can see of it as text: responses,
    status, details, debug string and metadata (binary values included)."""
    seen: list[object] = []
    try:
        if isinstance(call, grpc.aio.UnaryStreamCall):
            seen += [response async for response in call]
        else:
            seen.append(await call)
    except grpc.aio.AioRpcError as error:
        seen += [error.debug_error_string(), rpc_status.from_call(error)]
    code = await call.code()
    seen += [code, await call.details(), await call.initial_metadata()]
    seen += [(k, v) for k, v in await call.trailing_metadata()]
    return code, repr(seen)


async def test_no_key_or_secret_reaches_logs_errors_or_metadata(
    capfd: pytest.CaptureFixture[str],
) -> None:
    async with FakeUpstream(upstream_echoing_its_key) as upstream:
        up = route(
            "up",
            provider="openai",
            name="m",
            api_key="{{ secrets.UP }}",
            api_base=upstream.base_url,
        )
        alice = {"name": "alice", "sha256": hash_key(ALICE_KEY), "routes": ["chat", "up"]}
        config = {"auth": {"keys": [alice]}, "routes": [*ROUTES, up]}
        with all_logs() as logs:
            async with running_gateway(config, {"UP": UPSTREAM_KEY}) as gateway:
                stub = gateway.stub
                good, wrong = bearer(ALICE_KEY), bearer(ALICE_KEY + "x")
                bare = (("authorization", ALICE_KEY),)
                outcomes = [
                    await everything_seen(stub.Chat(chat("chat"), metadata=good, timeout=10)),
                    await everything_seen(stub.ListRoutes(pb.ListRoutesRequest(), metadata=good)),
                    await everything_seen(stub.Chat(chat("up", "400"), metadata=good, timeout=10)),
                    await everything_seen(stub.Chat(chat("up", "401"), metadata=good, timeout=10)),
                    await everything_seen(stub.Chat(chat("secret"), metadata=good, timeout=10)),
                    await everything_seen(stub.Chat(chat("chat"), metadata=wrong, timeout=10)),
                    await everything_seen(stub.Chat(chat("chat"), metadata=bare, timeout=10)),
                    await everything_seen(stub.ListRoutes(pb.ListRoutesRequest(), metadata=wrong)),
                ]
    codes = [code for code, _ in outcomes]
    assert codes == [
        grpc.StatusCode.OK,
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNAUTHENTICATED,
    ]
    # The upstream was sent its key, and quoted it back: redaction had work.
    assert [r.headers["authorization"] for r in upstream.requests] == [f"Bearer {UPSTREAM_KEY}"] * 2
    assert "bad credentials: Bearer [REDACTED]" in outcomes[2][1]
    log_text = logs.getvalue()
    assert "call failed: UPSTREAM_AUTH_FAILED" in log_text, "the scan saw the server's logs"

    captured = capfd.readouterr()
    seen_by_upstream = repr([(r.headers, r.body) for r in upstream.requests])
    for text in [log_text, captured.out, captured.err, *(seen for _, seen in outcomes)]:
        assert ALICE_KEY not in text
        assert UPSTREAM_KEY not in text
    assert ALICE_KEY not in seen_by_upstream, "a caller's key is never forwarded"
