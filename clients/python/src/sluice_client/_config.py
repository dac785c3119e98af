"""Connection options: where a client connects and how each call is sent."""

from __future__ import annotations

import ipaddress
import warnings

# Imported at runtime: libraries that build options from configuration
# (pydantic, cattrs) resolve the dataclass's field types.
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import grpc

ChannelOption = tuple[str, str | int]
CallMetadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class TLSConfig:
    """TLS for the channel. With every field unset the server is verified
    against the system's root certificates."""

    root_certificates: bytes | None = None
    """PEM root certificates to verify the server with, instead of the system's."""
    client_certificate: bytes | None = None
    """PEM certificate chain presented to the server, for mutual TLS."""
    client_private_key: bytes | None = field(default=None, repr=False)
    """PEM private key of `client_certificate`."""
    server_name_override: str | None = None
    """Name the server's certificate must carry when it differs from the
    target's host (a connection through a proxy, or a test certificate)."""

    def __post_init__(self) -> None:
        if (self.client_certificate is None) != (self.client_private_key is None):
            raise ValueError("client_certificate and client_private_key go together")


@dataclass(frozen=True)
class KeepAliveConfig:
    """HTTP/2 pings that find a dead connection while a stream waits for tokens.

    The server must accept pings this often. Sluice accepts one every 10
    seconds; a gRPC server left at its defaults accepts one per 5 minutes while
    it sends no data, and closes the connection (GOAWAY "too_many_pings") when
    a client pings more often.
    """

    interval: float = 30.0
    """Seconds between pings."""
    timeout: float = 15.0
    """Seconds to wait for a ping's answer before the connection is closed."""
    permit_without_calls: bool = False
    """Ping also while no call is open."""


@dataclass(frozen=True)
class ConnectionOptions:
    """Where a client connects and what it sends with every call.

    Options are immutable; derive variants with `dataclasses.replace`.
    """

    target: str = "127.0.0.1:50051"
    """gRPC target: "host:port", or any name gRPC resolves ("dns:///host:443")."""
    tls: TLSConfig | None = None
    """TLS settings; None connects in plaintext."""
    api_key: str | None = field(default=None, repr=False)
    """Sent as `authorization: Bearer <api_key>` with every call (in the
    clear when `tls` is None: use plaintext only on a trusted network)."""
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)
    """gRPC metadata (headers) sent with every call; keys are lower case."""
    timeout: float | None = None
    """Default deadline of a call in seconds, from its start to its last
    event; a call's own `timeout` overrides it. None: no deadline."""
    keepalive: KeepAliveConfig | None = KeepAliveConfig()
    """Keepalive pings; None turns them off."""
    max_send_message_length: int | None = None
    """Largest request in bytes (gRPC's default: no limit)."""
    max_receive_message_length: int | None = None
    """Largest response message in bytes (gRPC's default: 4 MiB)."""
    channel_options: tuple[ChannelOption, ...] = ()
    """Further gRPC channel arguments, e.g. ("grpc.lb_policy_name", "round_robin")."""

    def __post_init__(self) -> None:
        # A private copy, so a caller changing its dict later cannot change
        # the headers of a client already built from these options.
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))
        if any(key != key.lower() for key in self.metadata):
            raise ValueError("gRPC metadata keys must be lower case")
        if self.api_key is not None and "authorization" in self.metadata:
            raise ValueError("give the api_key or an authorization header, not both")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError("timeout must be positive")


def call_metadata(options: ConnectionOptions) -> CallMetadata:
    """The metadata every call of a client sends. Warns when it holds an API
    key that plaintext would carry beyond this host."""
    metadata = tuple(options.metadata.items())
    if options.api_key is not None:
        metadata += (("authorization", f"Bearer {options.api_key}"),)
    if options.tls is None and "authorization" in dict(metadata) and not _is_local(options.target):
        warnings.warn(
            f"an API key is sent in plaintext to {options.target}: anyone on the network "
            "can read it; set ConnectionOptions.tls",
            PlaintextKeyWarning,
            stacklevel=4,
        )
    return metadata


class PlaintextKeyWarning(UserWarning):
    """An API key would cross a network unencrypted."""


def _is_local(target: str) -> bool:
    """Whether a gRPC target stays on this host: a Unix socket, localhost or
    a loopback address (`127.0.0.1:50051`, `[::1]:50051`, `ipv4:...`,
    `dns:///localhost:50051`)."""
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    for scheme in ("dns:///", "dns:", "ipv4:", "ipv6:"):
        target = target.removeprefix(scheme)
    host = target.rsplit(":", 1)[0] if target.count(":") == 1 or "]" in target else target
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def channel_options(options: ConnectionOptions) -> list[ChannelOption]:
    """The gRPC channel arguments for `options`."""
    result: list[ChannelOption] = []
    if options.tls is not None and options.tls.server_name_override is not None:
        result.append(("grpc.ssl_target_name_override", options.tls.server_name_override))
    if options.keepalive is not None:
        keepalive = options.keepalive
        result += [
            ("grpc.keepalive_time_ms", round(keepalive.interval * 1000)),
            ("grpc.keepalive_timeout_ms", round(keepalive.timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", int(keepalive.permit_without_calls)),
        ]
    if options.max_send_message_length is not None:
        result.append(("grpc.max_send_message_length", options.max_send_message_length))
    if options.max_receive_message_length is not None:
        result.append(("grpc.max_receive_message_length", options.max_receive_message_length))
    return result + list(options.channel_options)


def channel_credentials(tls: TLSConfig) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=tls.root_certificates,
        private_key=tls.client_private_key,
        certificate_chain=tls.client_certificate,
    )
