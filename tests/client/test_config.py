"""Connection options, and TLS over a real channel."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import grpc
import pytest

from sluice_client import (
    AsyncClient,
    Client,
    ConnectionOptions,
    KeepAliveConfig,
    PlaintextKeyWarning,
    ResourceExhaustedError,
    TLSConfig,
    UnavailableError,
)
from sluice_client._config import call_metadata, channel_options
from tests.client.conftest import FakeGateway, serve

CERTS = Path(__file__).parent / "certs"


def pem(name: str) -> bytes:
    return (CERTS / name).read_bytes()


def test_repr_never_shows_secrets() -> None:
    options = ConnectionOptions(
        api_key="sk-secret",
        tls=TLSConfig(client_certificate=b"CERT", client_private_key=b"KEY-secret"),
    )

    assert "secret" not in repr(options)
    assert "target='127.0.0.1:50051'" in repr(options)


def test_call_metadata_carries_the_api_key_as_a_bearer_token() -> None:
    options = ConnectionOptions(api_key="sk-1", metadata={"x-tenant": "acme"})

    assert call_metadata(options) == (("x-tenant", "acme"), ("authorization", "Bearer sk-1"))
    assert call_metadata(ConnectionOptions()) == ()


@pytest.mark.parametrize(
    "target",
    [
        "sluice.internal:50051",
        "10.0.0.5:50051",
        "dns:///sluice.internal:443",
        "[2001:db8::1]:50051",
    ],
)
@pytest.mark.parametrize("client_class", [Client, AsyncClient])
async def test_a_key_sent_in_plaintext_beyond_loopback_warns(
    target: str, client_class: type[Client] | type[AsyncClient]
) -> None:
    with pytest.warns(PlaintextKeyWarning, match=f"plaintext to {re.escape(target)}") as caught:
        client = client_class(ConnectionOptions(target=target, api_key="sk-1"))
    assert caught[0].filename == __file__  # pointed at the caller's line
    assert "sk-1" not in str(caught[0].message)
    await _close(client)


@pytest.mark.parametrize(
    ("target", "fields"),
    [
        ("127.0.0.1:50051", {"api_key": "sk-1"}),
        ("localhost:50051", {"metadata": {"authorization": "Bearer sk-1"}}),
        ("[::1]:50051", {"api_key": "sk-1"}),
        ("ipv4:127.0.0.1:50051", {"api_key": "sk-1"}),
        ("unix:/run/sluice.sock", {"api_key": "sk-1"}),
        ("sluice.internal:50051", {"api_key": "sk-1", "tls": TLSConfig()}),
        ("sluice.internal:50051", {}),
    ],
)
async def test_no_warning_on_loopback_with_tls_or_without_a_key(
    target: str, fields: dict[str, Any]
) -> None:
    # filterwarnings = error: a warning would fail the test.
    await _close(AsyncClient(ConnectionOptions(target=target, **fields)))


async def _close(client: Client | AsyncClient) -> None:
    if isinstance(client, AsyncClient):
        await client.close()
    else:
        client.close()


def test_options_keep_their_own_copy_of_the_metadata() -> None:
    headers = {"x-tenant": "acme"}
    options = ConnectionOptions(metadata=headers)
    headers["x-tenant"] = "evil"

    assert options.metadata == {"x-tenant": "acme"}
    assert hash(options) == hash(ConnectionOptions(metadata={"x-other": "1"}))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"metadata": {"X-Tenant": "acme"}}, "lower case"),
        ({"api_key": "k", "metadata": {"authorization": "Bearer k"}}, "not both"),
        ({"timeout": 0}, "positive"),
    ],
)
def test_contradictory_options_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConnectionOptions(**fields)


def test_a_client_certificate_needs_its_key() -> None:
    with pytest.raises(ValueError, match="go together"):
        TLSConfig(client_certificate=b"CERT")


def test_channel_options() -> None:
    options = ConnectionOptions(
        tls=TLSConfig(server_name_override="sluice.test"),
        keepalive=KeepAliveConfig(interval=30, timeout=10, permit_without_calls=True),
        max_send_message_length=1 << 20,
        max_receive_message_length=16 << 20,
        channel_options=(("grpc.lb_policy_name", "round_robin"),),
    )

    assert channel_options(options) == [
        ("grpc.ssl_target_name_override", "sluice.test"),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.max_send_message_length", 1 << 20),
        ("grpc.max_receive_message_length", 16 << 20),
        ("grpc.lb_policy_name", "round_robin"),
    ]
    assert channel_options(ConnectionOptions(keepalive=None)) == []
    assert ("grpc.keepalive_time_ms", 30_000) in channel_options(ConnectionOptions())


def test_a_too_large_response_fails_the_call() -> None:
    with serve(FakeGateway()) as gateway:
        options = ConnectionOptions(target=gateway.target, max_receive_message_length=10)
        with Client(options) as client, pytest.raises(ResourceExhaustedError):
            client.list_routes()


SERVER_TLS = grpc.ssl_server_credentials([(pem("server.key"), pem("server.pem"))])
MUTUAL_TLS = grpc.ssl_server_credentials(
    [(pem("server.key"), pem("server.pem"))],
    root_certificates=pem("ca.pem"),
    require_client_auth=True,
)


async def test_tls_verifies_the_server_by_its_overridden_name() -> None:
    tls = TLSConfig(root_certificates=pem("ca.pem"), server_name_override="sluice.test")
    with serve(FakeGateway(), SERVER_TLS) as gateway:
        options = ConnectionOptions(target=gateway.target, tls=tls, timeout=10)
        async with AsyncClient(options) as client:
            routes = await client.list_routes()

    assert routes[0].name == "chat"


def test_mutual_tls_presents_the_client_certificate() -> None:
    tls = TLSConfig(
        root_certificates=pem("ca.pem"),
        client_certificate=pem("client.pem"),
        client_private_key=pem("client.key"),
        server_name_override="sluice.test",
    )
    with serve(FakeGateway(), MUTUAL_TLS) as gateway:
        options = ConnectionOptions(target=gateway.target, tls=tls, timeout=10)
        with Client(options) as client:
            assert client.list_routes()[0].name == "chat"
        without_certificate = TLSConfig(pem("ca.pem"), server_name_override="sluice.test")
        options = ConnectionOptions(target=gateway.target, tls=without_certificate, timeout=10)
        with Client(options) as client, pytest.raises(UnavailableError):
            client.list_routes()
