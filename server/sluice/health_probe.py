"""`sluice health`: a grpc.health.v1 client for Docker HEALTHCHECK and exec
probes, where a native gRPC probe is not available.

Exits 0 when the service is SERVING, 1 when the server answers anything else
(NOT_SERVING, UNKNOWN, or a service it does not know), 2 when no answer
comes: the server is unreachable, too slow, or serves no health service.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING_EXIT = 0
NOT_SERVING_EXIT = 1
UNREACHABLE_EXIT = 2
DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 5.0


def add_health_command(commands: argparse._SubParsersAction[Any]) -> None:
    health = commands.add_parser(
        "health", help="ask a server's grpc.health.v1 service: exit 0 when SERVING"
    )
    health.add_argument(
        "--address",
        default=DEFAULT_ADDRESS,
        help=f"HOST:PORT, [IPV6]:PORT or unix:PATH (default {DEFAULT_ADDRESS})",
    )
    health.add_argument("--service", default="", help="the service to ask about (default: server)")
    health.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for the answer"
    )
    tls = health.add_argument_group("TLS (any of these flags turns it on)")
    tls.add_argument("--tls", action="store_true", help="connect with TLS")
    tls.add_argument("--ca-file", type=Path, help="CA certificates (default: the system's)")
    tls.add_argument("--cert-file", type=Path, help="client certificate, for mTLS")
    tls.add_argument("--key-file", type=Path, help="the client certificate's private key")
    tls.add_argument("--server-name", help="the name the server's certificate must carry")


def run_health_command(args: argparse.Namespace) -> int:
    if (args.cert_file is None) != (args.key_file is None):
        print("sluice: --cert-file and --key-file go together", file=sys.stderr)
        return UNREACHABLE_EXIT
    try:
        credentials = channel_credentials(args)
    except OSError as error:
        print(f"sluice: {error}", file=sys.stderr)
        return UNREACHABLE_EXIT
    options = (
        [] if args.server_name is None else [("grpc.ssl_target_name_override", args.server_name)]
    )
    return check(args.address, args.service, args.timeout, credentials, options)


def channel_credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS credentials from the flags; None for plaintext (no TLS flag given)."""
    files = (args.ca_file, args.cert_file, args.key_file)
    if not args.tls and args.server_name is None and all(file is None for file in files):
        return None
    ca, cert, key = (file.read_bytes() if file is not None else None for file in files)
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def check(
    address: str,
    service: str,
    timeout: float,
    credentials: grpc.ChannelCredentials | None,
    options: list[tuple[str, str]],
) -> int:
    """Ask `address` about `service`; print its status, return the exit code."""
    channel = (
        grpc.insecure_channel(address, options)
        if credentials is None
        else grpc.secure_channel(address, credentials, options)
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as error:
            return _failed(address, service, error)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(status)
    return (
        SERVING_EXIT
        if response.status == health_pb2.HealthCheckResponse.SERVING
        else NOT_SERVING_EXIT
    )


def _failed(address: str, service: str, error: grpc.RpcError) -> int:
    code: grpc.StatusCode = error.code()
    if code is grpc.StatusCode.NOT_FOUND:
        print(f"SERVICE_UNKNOWN: {address} does not know service {service!r}")
        return NOT_SERVING_EXIT
    details = error.details()
    print(f"sluice: no health answer from {address}: {code.name} {details}", file=sys.stderr)
    return UNREACHABLE_EXIT
