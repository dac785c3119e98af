"""The gRPC server: GatewayService, health (grpc.health.v1) and reflection,
with graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sluice.api.servicer import GatewayServicer
from sluice.config import GatewayConfig
from sluice.gateway import Gateway
from sluice.health import SERVING, HealthService
from sluice_client.v1 import gateway_pb2, gateway_pb2_grpc

logger = logging.getLogger(__name__)

GATEWAY_SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name
SERVER_OPTIONS = [
    ("grpc.so_reuseport", 0),  # a second server on a taken port must fail, not share it
    ("grpc.max_receive_message_length", 32 * 1024 * 1024),  # inline images
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
]


class GatewayServer:
    """One Sluice server. `start` binds and serves; `stop` drains."""

    def __init__(self, config: GatewayConfig, host: str, port: int) -> None:
        self.config = config
        self.address = f"{host}:{port}"
        self.gateway = Gateway(config)
        self.health = HealthService()
        self._server = grpc.aio.server(options=SERVER_OPTIONS)
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(
            GatewayServicer(self.gateway), self._server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            [
                GATEWAY_SERVICE,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self._server,
        )
        self.port = 0

    async def start(self) -> int:
        """Bind and serve; return the bound port (useful with port 0)."""
        try:
            self.port = self._server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {self.address}: {exc}") from None
        await self._server.start()
        for service in ("", GATEWAY_SERVICE):
            await self.health.set(service, SERVING)
        return self.port

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, refuse new calls, give in-flight streams
        `grace` seconds to finish, then cancel the rest."""
        await self.health.drain()
        await self._server.stop(grace)
        await self.gateway.aclose()

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


async def serve(config: GatewayConfig, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT, then drain within the configured grace."""
    server = GatewayServer(config, host, port)
    bound = await server.start()
    routes = ", ".join(route.name for route in config.routes)
    logger.info("sluice serving on %s:%d (routes: %s)", host, bound, routes)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    grace = config.server.shutdown_grace
    logger.info("draining: in-flight calls have %.0fs to finish", grace)
    await server.stop(grace)
    logger.info("stopped")
