"""Run a real Sluice server in-process on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import yaml

from sluice.app import GatewayServer
from sluice.config.loader import parse_config
from sluice.listeners import bound_address
from sluice.telemetry import Telemetry
from sluice_client.v1 import gateway_pb2_grpc


@dataclass
class RunningGateway:
    server: GatewayServer
    channel: grpc.aio.Channel
    stub: gateway_pb2_grpc.GatewayServiceAsyncStub

    @property
    def target(self) -> str:
        """The first address served, as a client names it."""
        return bound_address(self.server.addresses[0], self.server.port)


@asynccontextmanager
async def running_gateway(
    config: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    telemetry: Telemetry | None = None,
    listen: Sequence[str] = ("127.0.0.1:0",),
) -> AsyncIterator[RunningGateway]:
    """A gateway on `config` and `listen`, its channel to the first address;
    with `telemetry` (e.g. in-memory exporters) instead of the one its
    `telemetry:` section builds."""
    parsed = parse_config(yaml.safe_dump(dict(config)), "<test config>", environ or {})
    server = GatewayServer(parsed, listen, telemetry=telemetry)
    await server.start()
    channel = grpc.aio.insecure_channel(bound_address(listen[0], server.port))
    try:
        yield RunningGateway(server, channel, gateway_pb2_grpc.GatewayServiceStub(channel))
    finally:
        await channel.close()
        await server.stop(0)


def route(route_name: str, route_type: str = "llm/v1/chat", **model: Any) -> dict[str, Any]:
    """A route entry; keyword arguments are its `model:` settings."""
    return {"name": route_name, "route_type": route_type, "model": model}
