"""Where Sluice listens: the addresses of `server.listen`, or the one of
`server.host` and `server.port`, and the one place each is bound.

An address is `host:port` (a name or an IPv4 address), `[v6]:port` (an IPv6
address in brackets, as in a URL) or `unix:/path/to.sock` (a Unix domain
socket, which gRPC creates, and removes again at shutdown).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import grpc

UNIX_SCHEME = "unix:"
MAX_PORT = 65535


def tcp_address(host: str, port: int) -> str:
    """`host:port`, an IPv6 `host` (`::`, `::1`) put in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def listen_addresses(
    listen: Sequence[str] | None, host: str, port: int, *, overridden: bool = False
) -> list[str]:
    """The addresses to bind: `listen` when the config gives it and the
    command line (`overridden`: --host or --port) does not replace it."""
    if listen is not None and not overridden:
        return list(listen)
    return [tcp_address(host, port)]


def address_port(address: str) -> int | None:
    """The TCP port of a valid `address`; None for a Unix socket."""
    if address.startswith(UNIX_SCHEME):
        return None
    return int(address.rpartition(":")[2])


def bound_address(address: str, port: int) -> str:
    """`address` with the `port` it was bound to (port 0 picks one)."""
    if address.startswith(UNIX_SCHEME):
        return address
    return f"{address.rpartition(':')[0]}:{port}"


def check_address(address: str) -> str:
    """`address` if Sluice can listen on it; else ValueError saying how to write it."""
    if address.startswith(UNIX_SCHEME):
        if not address[len(UNIX_SCHEME) :]:
            raise ValueError(f"{address!r}: give the socket's path, as unix:/path/to.sock")
        return address
    host, colon, port = address.rpartition(":")
    if not colon or not host:
        raise ValueError(f"{address!r}: write host:port, [ipv6]:port or unix:/path")
    if not port.isdecimal() or int(port) > MAX_PORT:
        raise ValueError(f"{address!r}: the port must be a number from 0 to {MAX_PORT}")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{address!r}: {host} is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"{address!r}: write an IPv6 address in brackets, as [{host}]:{port}")
    return address


def bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    """Bind `address`, with TLS when `credentials` are given; return the
    bound port (1 for a Unix socket). OSError when it cannot be bound."""
    try:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {exc}") from None


def is_local_address(address: str) -> bool:
    """Whether a listen address (`host:port`, `[v6]:port`, `unix:path`) is
    reachable only from this host: loopback or a Unix socket."""
    if address.startswith("unix:"):
        return True
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything
