"""TLS and mutual TLS on a real listener, with certificates made here: who
may connect under each `client_auth`, a certificate rotated on disk while a
connection stays open, callers known by their certificate, and an
identity forwarded by a sidecar believed only from trusted peers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from sluice.app import GatewayServer
from sluice.auth import hash_key
from sluice.config.loader import ConfigError, parse_config
from sluice_client.v1 import gateway_pb2_grpc
from tests.gateway import route
from tests.integration.test_auth import bearer, chat, error_info
from tests.pki import CertificateAuthority, Issued
from tests.telemetry import Recorded

SVC_A = "spiffe://acme.test/ns/prod/sa/svc-a"
BOB_KEY = "sk-sluice-bob-Hc5tR9mXp1"
ROUTES = [
    route("chat", provider="mock", reply="hi there"),
    route("secret", provider="mock", reply="hush"),
]
IDENTITIES = {
    "keys": [{"name": "bob", "sha256": hash_key(BOB_KEY)}],
    "identities": [
        {
            "name": "svc-a",
            "spiffe_id": SVC_A,
            "routes": ["chat"],
            "limits": {"requests": "2/minute"},
        },
        # Written with blanks and a lower-case type: matched all the same.
        {"name": "svc-b", "subject": "cn=svc-b, O=acme"},
    ],
}


class Pki:
    """A CA with the server's files written to `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca = CertificateAuthority()
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(self.ca.pem)
        self.cert_file, self.key_file = self.ca.server().write(directory, "server")

    def tls(self, client_auth: str = "none") -> dict[str, Any]:
        config: dict[str, Any] = {"cert_file": str(self.cert_file), "key_file": str(self.key_file)}
        if client_auth != "none":
            config |= {"client_ca_file": str(self.ca_file), "client_auth": client_auth}
        return config

    def rotate(self, issued: Issued) -> None:
        """Replace the server's files the way cert-manager does: new files
        renamed over the old ones."""
        for data, path in ((issued.key, self.key_file), (issued.cert, self.cert_file)):
            fresh = path.with_suffix(".new")
            fresh.write_bytes(data)
            os.replace(fresh, path)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@asynccontextmanager
async def serving(config: dict[str, Any], recorded: Recorded | None = None) -> AsyncIterator[int]:
    parsed = parse_config(yaml.safe_dump(config), "<test config>", {})
    telemetry = recorded.telemetry if recorded is not None else None
    server = GatewayServer(parsed, ["127.0.0.1:0"], telemetry=telemetry)
    await server.start()
    try:
        yield server.port
    finally:
        await server.stop(0)


def channel_to(port: int, ca: bytes, client: Issued | None = None) -> grpc.aio.Channel:
    """A TLS channel verifying the server with `ca`, presenting `client`."""
    credentials = grpc.ssl_channel_credentials(
        ca, client.key if client else None, client.cert if client else None
    )
    return grpc.aio.secure_channel(f"localhost:{port}", credentials)


async def chat_text(channel: grpc.aio.Channel, route_name: str = "chat", metadata: Any = ()) -> str:
    stub = gateway_pb2_grpc.GatewayServiceStub(channel)
    stream = stub.Chat(chat(route_name), metadata=metadata, timeout=5)
    return "".join([response.delta.text async for response in stream])


async def refusal(channel: grpc.aio.Channel, route_name: str = "chat") -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await chat_text(channel, route_name)
    return refused.value


@pytest.mark.parametrize("with_client_cert", [False, True])
async def test_server_tls_serves_clients_with_or_without_a_certificate(
    pki: Pki, with_client_cert: bool
) -> None:
    client = pki.ca.client("CN=anyone") if with_client_cert else None
    async with (
        serving({"server": {"tls": pki.tls()}, "routes": ROUTES}) as port,
        channel_to(port, pki.ca.pem, client) as channel,
    ):
        assert await chat_text(channel) == "hi there"


async def test_a_plaintext_client_cannot_talk_to_a_tls_listener(pki: Pki) -> None:
    config = {"server": {"tls": pki.tls()}, "routes": ROUTES}
    async with serving(config) as port, grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        assert (await refusal(channel)).code() == grpc.StatusCode.UNAVAILABLE


async def test_require_refuses_connections_without_a_certificate_of_the_client_ca(
    pki: Pki,
) -> None:
    stranger = CertificateAuthority("Another CA").client("CN=svc-a")
    async with serving({"server": {"tls": pki.tls("require")}, "routes": ROUTES}) as port:
        async with channel_to(port, pki.ca.pem, pki.ca.client("CN=svc-a")) as channel:
            assert await chat_text(channel) == "hi there"
        for client in (None, stranger):
            async with channel_to(port, pki.ca.pem, client) as channel:
                assert (await refusal(channel)).code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("tls", "problem"),
    [
        (
            {"client_auth": "require"},
            "server.tls: client_auth require needs server.tls.client_ca_file",
        ),
        (
            {"client_auth": "request", "client_ca_file": "ca.pem"},
            "client_auth request is not available",
        ),
    ],
)
def test_client_auth_without_a_ca_or_request_is_a_config_error(
    tls: dict[str, str], problem: str
) -> None:
    config = {
        "server": {"tls": {"cert_file": "s.pem", "key_file": "s.key", **tls}},
        "routes": ROUTES,
    }
    with pytest.raises(ConfigError, match=problem.replace(".", r"\.")):
        parse_config(yaml.safe_dump(config), "<test config>", {})


async def test_a_missing_certificate_file_is_named_by_its_key(pki: Pki) -> None:
    pki.key_file.unlink()
    with pytest.raises(OSError, match=r"server\.tls\.key_file: cannot read .*server\.key"):
        async with serving({"server": {"tls": pki.tls()}, "routes": ROUTES}):
            pass


async def test_a_rotated_certificate_reaches_new_connections_and_old_ones_stay(
    pki: Pki,
) -> None:
    next_ca = CertificateAuthority("Next CA")
    async with (
        serving({"server": {"tls": pki.tls()}, "routes": ROUTES}) as port,
        channel_to(port, pki.ca.pem) as before,
    ):
        assert await chat_text(before) == "hi there"
        pki.rotate(next_ca.server())
        # A new connection is handshaken with the new certificate: only
        # a client trusting the next CA gets through.
        async with channel_to(port, next_ca.pem) as after:
            assert await chat_text(after) == "hi there"
        async with channel_to(port, pki.ca.pem) as old_trust:
            assert (await refusal(old_trust)).code() == grpc.StatusCode.UNAVAILABLE
        # The connection made before the rotation was not dropped: a
        # new handshake would fail, as just seen, yet this call passes.
        assert await chat_text(before) == "hi there"
        assert before.get_state() == grpc.ChannelConnectivity.READY


async def test_a_spiffe_identity_has_its_routes_and_limits(pki: Pki) -> None:
    recorded = Recorded()
    config = {"server": {"tls": pki.tls("require")}, "auth": IDENTITIES, "routes": ROUTES}
    async with (
        serving(config, recorded) as port,
        channel_to(port, pki.ca.pem, pki.ca.client("CN=a", SVC_A)) as channel,
    ):
        assert await chat_text(channel) == "hi there"
        denied = await refusal(channel, "secret")
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_info(denied).metadata["key"] == "svc-a"
        assert await chat_text(channel) == "hi there"
        limited = await refusal(channel)
        assert error_info(limited).reason == "RATE_LIMITED"
        # A bearer key wins over the certificate: bob may call any route.
        assert await chat_text(channel, "secret", bearer(BOB_KEY)) == "hush"
    names = [line["key_name"] for line in recorded.log_lines()]
    assert names == ["svc-a", "svc-a", "svc-a", "svc-a", "bob"]


async def test_a_subject_identity_and_an_unknown_certificate(pki: Pki) -> None:
    config = {"server": {"tls": pki.tls("require")}, "auth": IDENTITIES, "routes": ROUTES}
    async with serving(config) as port:
        async with channel_to(port, pki.ca.pem, pki.ca.client("CN=svc-b,O=acme")) as channel:
            assert await chat_text(channel, "secret") == "hush"
        async with channel_to(port, pki.ca.pem, pki.ca.client("CN=svc-b,O=other")) as channel:
            unknown = await refusal(channel)
            assert unknown.code() == grpc.StatusCode.UNAUTHENTICATED
            assert error_info(unknown).reason == "UNKNOWN_IDENTITY"


XFCC = (
    'By=spiffe://acme.test/ns/prod/sa/sluice;Hash=abc;Subject="CN=edge,O=acme";URI=spiffe://acme.test/edge,'
    f'By=spiffe://acme.test/ns/prod/sa/sluice;Hash=def;Subject="CN=a,O=acme";URI={SVC_A}'
)


@pytest.mark.parametrize(
    ("trusted", "believed"), [(["127.0.0.1"], True), (["10.0.0.0/8", "unix"], False)]
)
async def test_a_forwarded_identity_is_believed_only_from_trusted_peers(
    trusted: list[str], believed: bool
) -> None:
    auth = {**IDENTITIES, "forwarded_identity": {"trusted_peers": trusted}}
    forwarded = (("x-forwarded-client-cert", XFCC),)
    config = {"auth": auth, "routes": ROUTES}
    async with serving(config) as port, grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        if believed:
            # The last element, the closest proxy's, names svc-a: the
            # route it may call, not the other.
            assert await chat_text(channel, "chat", forwarded) == "hi there"
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await chat_text(channel, "secret", forwarded)
            assert error_info(denied.value).reason == "ROUTE_NOT_ALLOWED"
        else:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await chat_text(channel, "chat", forwarded)
            assert error_info(refused.value).reason == "UNKNOWN_IDENTITY"
