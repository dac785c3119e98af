"""Serving as operators deploy it: several listeners (IPv6, a Unix socket),
message size bounds, a drain load balancers can see, the call id every call
carries, and `sluice health` against real servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sluice.cli import main
from sluice.health import NOT_SERVING, SERVING, HealthService
from sluice.listeners import bound_address
from sluice_client.v1 import gateway_pb2 as pb
from sluice_client.v1 import gateway_pb2_grpc
from tests.gateway import route, running_gateway
from tests.telemetry import Recorded

MOCK = {"routes": [route("chat", provider="mock", reply="a b c", chunk_delay=0.01)]}
CERTS = Path(__file__).parents[1] / "client" / "certs"


def chat(text: str = "hi") -> pb.ChatRequest:
    return pb.ChatRequest(
        route="chat", messages=[pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text=text)])]
    )


async def reply_text(stub: gateway_pb2_grpc.GatewayServiceAsyncStub) -> str:
    return "".join([event.delta.text async for event in stub.Chat(chat(), timeout=10)])


async def test_one_server_answers_on_ipv6_and_on_a_unix_socket(tmp_path: Path) -> None:
    socket = tmp_path / "sluice.sock"
    listen = ("[::1]:0", f"unix:{socket}")
    async with running_gateway(MOCK, listen=listen) as gateway:
        assert gateway.target.startswith("[::1]:")
        assert await reply_text(gateway.stub) == "a b c"
        assert socket.is_socket()
        async with grpc.aio.insecure_channel(f"unix:{socket}") as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            assert await reply_text(stub) == "a b c"
            health = health_pb2_grpc.HealthStub(channel)
            assert (await health.Check(health_pb2.HealthCheckRequest())).status == SERVING
    assert not socket.exists(), "gRPC removes its socket at shutdown"


async def test_a_taken_address_is_an_error_naming_it() -> None:
    async with running_gateway(MOCK) as gateway:
        with pytest.raises(OSError, match=f"cannot listen on {gateway.target}"):
            async with running_gateway(MOCK, listen=(gateway.target,)):
                pass


async def test_a_request_over_max_receive_message_bytes_is_refused_unread() -> None:
    config = {**MOCK, "server": {"max_receive_message_bytes": 4096}}
    async with running_gateway(config) as gateway:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gateway.stub.Chat(chat("x" * 5000)).read()
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await reply_text(gateway.stub) == "a b c", "a request within the bound"


async def test_every_call_carries_its_call_id_as_logged_and_traced() -> None:
    recorded = Recorded()
    async with running_gateway(MOCK, telemetry=recorded.telemetry) as gateway:
        served = gateway.stub.Chat(chat())
        served_id = dict(await served.initial_metadata())["sluice-call-id"]
        assert [event async for event in served]
        refused = gateway.stub.Chat(pb.ChatRequest(route="nope", messages=chat().messages))
        refused_id = dict(await refused.initial_metadata())["sluice-call-id"]
        assert await refused.code() == grpc.StatusCode.NOT_FOUND
        listed = gateway.stub.ListRoutes(pb.ListRoutesRequest())
        listed_id = dict(await listed.initial_metadata())["sluice-call-id"]
        await listed
    ids = [served_id, refused_id, listed_id]
    assert len(set(ids)) == 3
    assert all(len(each) == 32 for each in ids)
    logged = {line["call_id"]: line["status"] for line in recorded.log_lines()}
    assert logged == {served_id: "OK", refused_id: "NOT_FOUND", listed_id: "OK"}
    traced = {
        span.attributes["sluice.call_id"]
        for span in recorded.finished()
        if span.kind.name == "SERVER" and span.attributes is not None
    }
    assert traced == set(ids)


async def test_drain_delay_keeps_serving_while_health_says_not_serving() -> None:
    async with running_gateway(MOCK) as gateway:
        health = health_pb2_grpc.HealthStub(gateway.channel)
        watch = health.Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == SERVING
        stopping = asyncio.create_task(gateway.server.stop(grace=5, drain_delay=1.0))

        assert (await watch.read()).status == NOT_SERVING
        check = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert check.status == NOT_SERVING
        # Still accepting: a new connection, and a new call on it, are served.
        async with grpc.aio.insecure_channel(gateway.target) as fresh:
            assert await reply_text(gateway_pb2_grpc.GatewayServiceStub(fresh)) == "a b c"
        assert not stopping.done()

        await asyncio.wait_for(asyncio.shield(stopping), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gateway.stub.Chat(chat(), timeout=5).read()
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


# --- sluice health -------------------------------------------------------------------


async def health_command(*args: str) -> int:
    """`sluice health ARGS` off the event loop that serves the server."""
    return await asyncio.to_thread(main, ["health", "--timeout", "3", *args])


async def test_health_exits_0_when_serving_and_1_when_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    socket = tmp_path / "sluice.sock"
    async with running_gateway(MOCK, listen=("[::1]:0", f"unix:{socket}")) as gateway:
        assert await health_command("--address", gateway.target) == 0
        assert await health_command("--address", f"unix:{socket}") == 0
        service = "sluice.v1.GatewayService"
        assert await health_command("--address", gateway.target, "--service", service) == 0
        assert capsys.readouterr().out.splitlines() == ["SERVING"] * 3
        assert await health_command("--address", gateway.target, "--service", "nope") == 1
        assert "SERVICE_UNKNOWN" in capsys.readouterr().out
        await gateway.server.health.drain()
        assert await health_command("--address", gateway.target) == 1
        assert capsys.readouterr().out.strip() == "NOT_SERVING"


async def test_health_exits_2_when_the_server_is_unreachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_gateway(MOCK) as gateway:
        address = gateway.target
    assert await health_command("--address", address) == 2
    assert await health_command("--address", f"unix:{tmp_path / 'none.sock'}") == 2
    assert f"no health answer from {address}: UNAVAILABLE" in capsys.readouterr().err


@asynccontextmanager
async def tls_health_server(*, require_client_cert: bool) -> AsyncIterator[str]:
    """A grpc.health.v1 server on TLS (the test PKI's sluice.test certificate)."""
    credentials = grpc.ssl_server_credentials(
        [((CERTS / "server.key").read_bytes(), (CERTS / "server.pem").read_bytes())],
        root_certificates=(CERTS / "ca.pem").read_bytes(),
        require_client_auth=require_client_cert,
    )
    server = grpc.aio.server()
    health = HealthService()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    await health.set("", SERVING)
    try:
        yield bound_address("127.0.0.1:0", port)
    finally:
        await server.stop(0)


async def test_health_speaks_tls_and_mtls() -> None:
    trust = ("--ca-file", str(CERTS / "ca.pem"), "--server-name", "sluice.test")
    client = ("--cert-file", str(CERTS / "client.pem"), "--key-file", str(CERTS / "client.key"))
    async with tls_health_server(require_client_cert=False) as address:
        assert await health_command("--address", address, "--tls", *trust) == 0
        assert await health_command("--address", address) == 2, "plaintext to a TLS port"
        assert await health_command("--address", address, "--tls") == 2, "untrusted CA"
    async with tls_health_server(require_client_cert=True) as address:
        assert await health_command("--address", address, *trust, *client) == 0
        assert await health_command("--address", address, *trust) == 2, "no client certificate"


async def test_health_refuses_half_a_client_certificate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await health_command("--cert-file", str(CERTS / "client.pem")) == 2
    assert "--cert-file and --key-file go together" in capsys.readouterr().err
